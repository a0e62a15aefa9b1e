"""The compressed BERT in one file: one Tucker factor bank shared by the encoder's maps, and its transformers classes.

Self-contained (torch and transformers only, as transformers' custom-architecture code must be): a tdlib checkpoint
saves this file beside its weights, so ``AutoModel.from_pretrained(dir, trust_remote_code=True)`` loads it where
tdlib is not installed, and ``import tdlib`` registers the same classes with the Auto classes (model type
``tdlib_bert``), so no flag is needed where it is. Where tdlib is installed its errors are the ones raised here.

``TuckerBank`` owns the trainable factors of the whole encoder: U (D x d) and V (D x d) shared by
every map, the bank of l core matrices C (l x d x d) and the mixing weights P (n x l). Matrix i of
the stacked tensor is W_i = U M_i V^T with M_i = sum_j P_ij C_j.

``BankLinear`` replaces one ``nn.Linear`` whose weight is made of a x b such D x D blocks
(a = b = 1 for Q, K, V, O; 1 x k for the FFN up-projection; k x 1 for the FFN down-projection).
Two implementations (the paper's reconstruction protocol and its naive alternative):

* ``factorized``: x -> xU -> (M V^T) or x -> (U M) -> V^T (:data:`FORMS`), whichever costs fewer
  multiply-adds for this block shape (:func:`map_macs`), never forming a D x D matrix. Maps that
  read the same input tensor (Q, K and V) share one xU through the bank's input cache (in eval, one fused
  xU [G_q|G_k|G_v] matmul); the k FFN-up blocks share it by construction; the k FFN-down blocks sum into one
  d-wide product through U M, which V^T maps back once.
* ``reconstructed``: W = U M V^T is built and applied as a dense matrix.

In ``eval()`` mode the small matrices (M, M V^T, or W) are built once, without autograd, and reused
by every forward; the cache is keyed on the parameters' storage and version counters, so an
optimizer step, ``load_state_dict`` or ``.to()`` invalidates it. ``n_builds`` counters let tests
check that inference does not rebuild per forward. Gradients w.r.t. the factors need ``train()``.

``FactorStack`` / ``StackLinear`` hold any other fitted decomposition (CP, TT, II, III) as trainable
factors, so the method comparison can distil every method the same way.

The structure (which D x D matrix of the stacked tensor each map reads) is :func:`slots`; :func:`apply_structure`
swaps a BERT's ``nn.Linear`` maps for ``BankLinear`` modules over one bank and records the :class:`CompressionSpec`
in ``config.tdlib``, which is all a checkpoint needs to be rebuilt.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertForSequenceClassification, BertModel

try:
    from tdlib.core.errors import ConfigError, RankError, check_choice, check_rank
except ImportError:  # loaded as a checkpoint's remote code, without tdlib: the same checks, as ValueErrors

    class ConfigError(ValueError):
        """Unknown option names or values."""

    class RankError(ValueError):
        """Ranks that are not positive integers or exceed the mode they truncate."""

    def check_choice(name, value, choices):
        if value not in choices:
            raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}")
        return value

    def check_rank(name, value, upper=None, upper_name=""):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise RankError(f"{name} must be a positive integer, got {value!r}")
        if upper is not None and value > upper:
            raise RankError(f"{name}={value} exceeds {upper_name or 'its mode size'} ({upper})")
        return value


# -- the structure: which matrix of the stacked tensor each map reads --------------------------------------------
OPS = ("san", "ffn", "san_ffn")

# module path inside one encoder layer, for each role
ATTENTION_PATHS = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attn_out": "attention.output.dense",
}
FFN_PATHS = {"ffn_up": "intermediate.dense", "ffn_down": "output.dense"}


@dataclass(frozen=True)
class Slot:
    """One D x D matrix of the stacked tensor: which layer/module it lives in and which block."""

    index: int  # position along mode 0 of the stacked tensor
    layer: int
    role: str  # query | key | value | attn_out | ffn_up | ffn_down
    block: int  # block of the FFN up (output columns) or down (input rows) projection; 0 otherwise

    @property
    def path(self) -> str:
        return {**ATTENTION_PATHS, **FFN_PATHS}[self.role]


def slots(n_layers: int, k: int, ops: str = "san_ffn") -> list[Slot]:
    """Every slot of the stacked tensor, in stacking order (layer-major)."""
    check_choice("ops", ops, OPS)
    roles: list[tuple[str, int]] = []
    if ops in ("san", "san_ffn"):
        roles += [(r, 0) for r in ATTENTION_PATHS]
    if ops in ("ffn", "san_ffn"):
        roles += [("ffn_up", b) for b in range(k)] + [("ffn_down", b) for b in range(k)]
    out = []
    for layer in range(n_layers):
        for role, block in roles:
            out.append(Slot(len(out), layer, role, block))
    return out


def _get(module: nn.Module, path: str) -> nn.Module:
    for name in path.split("."):
        module = getattr(module, name, None)
        if module is None:
            return None  # type: ignore[return-value]
    return module


def get_module(layer: nn.Module, path: str) -> nn.Module:
    return _get(layer, path)


def set_module(layer: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(_get(layer, parent) if parent else layer, name, new)



# -- the bank and the maps that read it ------------------------------------------------------------------------
IMPLEMENTATIONS = ("factorized", "reconstructed")


FORMS = ("fold", "fold_in")  # a factorized map's forms, in the order that breaks a tie


def map_macs(a: int, b: int, d_model: int, rank_dim: int) -> dict[str, int]:
    """Per-token multiply-adds of an (a*D) -> (b*D) bank map in each of its :data:`FORMS`.

    ``fold``: xU (a*D*d), then the folded M V^T (a*d*b*D). ``fold_in``: x through the folded U M (a*D*b*d), then
    V^T (b*d*D). For a = 1 the two cost the same and ``fold`` wins the tie, since its xU can be shared (Q, K, V);
    for a > 1, b = 1 (FFN down) ``fold_in`` is the cheaper: its a blocks sum into one d-wide product before V^T.
    (M and V^T applied one after the other, after xU, costs a*d*b*d more than ``fold_in`` where b = 1, and more
    than ``fold`` where a = 1: it is never the cheapest for BERT's maps.)
    """
    D, d = d_model, rank_dim
    return {"fold": a * D * d + a * d * b * D, "fold_in": a * D * b * d + b * d * D}


def cheapest_form(a: int, b: int, d_model: int, rank_dim: int) -> str:
    """The :data:`FORMS` entry with fewest multiply-adds (the earlier one on a tie)."""
    macs = map_macs(a, b, d_model, rank_dim)
    return min(FORMS, key=macs.__getitem__)


def _full_precision(like: torch.Tensor):
    """Autocast off: an eval cache (M, M V^T) is built in its factors' dtype, like a weight, whatever the caller's
    autocast; autocast then casts it at each use, as it does a Linear's weight. Built under a bf16 autocast it would
    be bf16, and a later fp32 forward would fail on it."""
    return torch.autocast(like.device.type, enabled=False)


def _version_key(*tensors: torch.Tensor) -> tuple:
    # an inference tensor (made under torch.inference_mode) cannot change in place and has no version counter
    return tuple((t.data_ptr(), 0 if t.is_inference() else t._version, t.dtype, t.device) for t in tensors)


class TuckerBank(nn.Module):
    """Trainable factors (U, V, C, P) shared by all decomposed maps of the encoder."""

    def __init__(self, n: int, d_model: int, rank_layer: int, rank_dim: int) -> None:
        super().__init__()
        self.n, self.d_model, self.rank_layer, self.rank_dim = n, d_model, rank_layer, rank_dim
        self.U = nn.Parameter(torch.empty(d_model, rank_dim))
        self.V = nn.Parameter(torch.empty(d_model, rank_dim))
        self.C = nn.Parameter(torch.empty(rank_layer, rank_dim, rank_dim))
        self.P = nn.Parameter(torch.empty(n, rank_layer))
        self.n_builds = 0  # M rebuilds (eval cache misses)
        self.n_projections = 0  # xU products computed (shared ones count once)
        self._mixed: tuple[tuple, torch.Tensor] | None = None
        self._shared: dict[str, list] = {}  # group -> [input, xU, uses left] (training path)
        self._groups: dict[str, list[BankLinear]] = {}  # group -> members, in call order (Q, K, V)
        self._fused: dict[str, tuple] = {}  # group -> (key, concatenated weight, concatenated bias)
        self._fused_out: dict[str, list] = {}  # group -> [input, {member: output}] (eval path)
        self._pass: list | None = None  # [key, (M_1, ..., M_n)] of the encoder forward in progress (training path)

    @torch.no_grad()
    def init_random(self, seed: int = 0, weight_std: float = 0.02) -> TuckerBank:
        """Random init whose reconstructed W_i have entries of std ``weight_std`` (BERT's init range)."""
        gen = torch.Generator().manual_seed(seed)
        for p in (self.U, self.V):
            q, _ = torch.linalg.qr(torch.randn(self.d_model, self.rank_dim, generator=gen, dtype=torch.float64))
            p.copy_(q)
        self.P.copy_(torch.randn(self.n, self.rank_layer, generator=gen) / math.sqrt(self.rank_layer))
        self.C.copy_(torch.randn(self.rank_layer, self.rank_dim, self.rank_dim, generator=gen)
                     * weight_std * self.d_model / self.rank_dim)
        return self

    @torch.no_grad()
    def init_from(self, P: torch.Tensor, C: torch.Tensor, U: torch.Tensor, V: torch.Tensor) -> TuckerBank:
        """Copy factors of a fitted Tucker decomposition (``tdlib.core.decompose.Tucker``) in."""
        for param, value in ((self.P, P), (self.C, C), (self.U, U), (self.V, V)):
            param.copy_(value.to(param))
        return self

    def caching(self) -> bool:
        return not self.training

    def mixed(self) -> torch.Tensor:
        """M (n, d, d), M_i = sum_j P_ij C_j; cached in eval mode."""
        if not self.caching():
            return torch.einsum("nl,lpq->npq", self.P, self.C)
        key = _version_key(self.P, self.C)
        if self._mixed is None or self._mixed[0] != key:
            with torch.no_grad(), _full_precision(self.P):
                self.n_builds += 1
                self._mixed = (key, torch.einsum("nl,lpq->npq", self.P, self.C))
        return self._mixed[1]

    def begin_pass(self) -> None:
        """An encoder forward starts (its pre-hook): its maps will share one mixing of all n matrices."""
        self._pass = []

    def end_pass(self) -> None:
        """The encoder forward ended (or raised): the mixing is dropped (autograd keeps what backward needs)."""
        self._pass = None

    def _pass_mixed(self) -> tuple[torch.Tensor, ...]:
        """(M_1, ..., M_n) for this encoder forward, computed by its first map: one GEMM reading C once, and in the
        backward one gradient of C, where mixing each map's rows on its own read and cast all of C, and added a
        gradient of C, once per map."""
        key = (_version_key(self.P, self.C), torch.is_grad_enabled(), torch.is_autocast_enabled(self.P.device.type))
        if not self._pass or self._pass[0] != key:
            self._pass[:] = [key, torch.einsum("nl,lpq->npq", self.P, self.C).unbind(0)]
        return self._pass[1]

    def mixed_rows(self, indices: torch.Tensor, grid: tuple[tuple[int, ...], ...] | None = None) -> torch.Tensor:
        """M_i for the given matrix indices only (any shape). In training, within an encoder forward the maps share
        one mixing of all n matrices (:meth:`begin_pass`); a map called on its own mixes just its rows."""
        if self.caching():
            return self.mixed()[indices]
        if self._pass is not None:
            mixed = self._pass_mixed()
            flat = indices.reshape(-1).tolist() if grid is None else [i for row in grid for i in row]
            rows = torch.stack([mixed[i] for i in flat])
        else:
            rows = torch.einsum("kl,lpq->kpq", self.P[indices.reshape(-1)], self.C)
        return rows.reshape(*indices.shape, self.rank_dim, self.rank_dim)

    def project(self, x: torch.Tensor, blocks: int, group: str | None = None, uses: int = 1) -> torch.Tensor:
        """xU for an input of ``blocks`` D-wide chunks -> (..., blocks * d).

        Consumers of one ``group`` (Q, K, V of a layer) that receive the *same* tensor object share
        one product: the first computes it, the next ``uses - 1`` reuse it, then the entry is dropped.
        """
        if group is not None:
            entry = self._shared.get(group)
            if entry is not None and entry[0] is x:
                entry[2] -= 1
                if entry[2] <= 0:
                    del self._shared[group]
                return entry[1]
        self.n_projections += 1
        if blocks == 1:
            xu = F.linear(x, self.U.T)
        else:
            xu = F.linear(x.unflatten(-1, (blocks, self.d_model)), self.U.T).flatten(-2)
        if group is not None and uses > 1:
            self._shared[group] = [x, xu, uses - 1]
        return xu

    def register_group(self, group: str, members: list[BankLinear]) -> None:
        """Declare maps that read one input (Q, K, V): in eval they run as one fused matmul."""
        self._groups[group] = members

    def fused_group_forward(self, member: BankLinear, x: torch.Tensor) -> torch.Tensor:
        """Eval path of a group: the first member computes xU [G_1 | G_2 | ...] + [b_1 | b_2 | ...] once.

        One (d x 3D) matmul instead of three (d x D) ones; the other members take their slice
        (a view) when they are called with the same input tensor.
        """
        group = member.group
        pending = self._fused_out.get(group)
        if pending is not None and pending[0] is x and member in pending[1]:
            out = pending[1].pop(member)
            if not pending[1]:
                del self._fused_out[group]
            return out
        members = self._groups[group]
        biases = [m.bias for m in members if m.bias is not None]
        key = (_version_key(self.U, self.V, self.C, self.P, *biases), tuple(m.implementation for m in members))
        cached = self._fused.get(group)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                weight = torch.cat([m.weight_for_forward() for m in members]).contiguous()
                bias = torch.cat(biases) if len(biases) == len(members) else None
            cached = self._fused[group] = (key, weight, bias)
        y = F.linear(self.project(x, 1), cached[1], cached[2])
        outs = y.split([m.out_features for m in members], dim=-1)
        self._fused_out[group] = [x, {m: o for m, o in zip(members, outs, strict=True) if m is not member}]
        return outs[members.index(member)]

    def train(self, mode: bool = True):
        self._mixed = None
        self._shared.clear()
        self._fused.clear()
        self._fused_out.clear()
        return super().train(mode)

    def extra_repr(self) -> str:
        return f"n={self.n}, D={self.d_model}, rank_layer={self.rank_layer}, rank_dim={self.rank_dim}"


class BankLinear(nn.Module):
    """A linear map whose (a*D) x (b*D) weight is an a x b grid of bank matrices, plus the original bias."""

    def __init__(self, bank: TuckerBank, indices: list[list[int]], bias: torch.Tensor | None = None,
                 group: str | None = None, group_uses: int = 1, implementation: str = "factorized") -> None:
        super().__init__()
        object.__setattr__(self, "bank", bank)  # not a submodule: the bank is saved once, by the encoder
        # the matrices this map reads, as plain ints: a buffer would be left uninitialised when transformers builds
        # the model on the meta device and loads only the checkpoint's tensors (the index tensor is made on first use)
        self.grid = tuple(tuple(int(i) for i in row) for row in indices)
        self._indices: torch.Tensor | None = None
        self.a, self.b = len(indices), len(indices[0])
        self.in_features, self.out_features = self.a * bank.d_model, self.b * bank.d_model
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None
        self.group, self.group_uses = group, group_uses
        self.implementation = implementation
        self.form = cheapest_form(self.a, self.b, bank.d_model, bank.rank_dim)
        self.n_builds = 0
        self._cache: tuple[tuple, torch.Tensor] | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, bank: TuckerBank, indices: list[list[int]], **kwargs) -> BankLinear:
        """Replace a dense ``nn.Linear`` by a bank map, keeping its bias (the converter, as in tltorch)."""
        return cls(bank, indices, linear.bias, **kwargs)

    @property
    def indices(self) -> torch.Tensor:
        """The (a, b) matrix indices as a long tensor, on the bank's device (made once per device)."""
        device = self.bank.P.device
        if self._indices is None or self._indices.device != device:
            self._indices = torch.tensor(self.grid, dtype=torch.long, device=device)
        return self._indices

    @property
    def implementation(self) -> str:
        return self._implementation

    @implementation.setter
    def implementation(self, value: str) -> None:
        self._implementation = check_choice("implementation", value, IMPLEMENTATIONS)
        self._cache = None

    def macs(self) -> int:
        """Per-token multiply-adds of this map's forward: its form's (:func:`map_macs`), a shared xU counted as its
        share, or a*b*D*D reconstructed."""
        D, d = self.bank.d_model, self.bank.rank_dim
        if self.implementation == "reconstructed":
            return self.in_features * self.out_features
        shared = self.a * D * d * (self.group_uses - 1) // self.group_uses if self.form == "fold" else 0
        return map_macs(self.a, self.b, D, d)[self.form] - shared

    # -- the small matrices ---------------------------------------------------------------------
    def _mblock(self) -> torch.Tensor:
        """M arranged as an (a*d) x (b*d) block matrix (rows: input blocks, columns: output blocks)."""
        m = self.bank.mixed_rows(self.indices, self.grid)  # (a, b, d, d)
        return m.permute(0, 2, 1, 3).reshape(self.a * self.bank.rank_dim, self.b * self.bank.rank_dim)

    def _build(self) -> torch.Tensor:
        """The per-implementation matrix, in F.linear's (out, in) layout."""
        self.n_builds += 1
        bank, mb = self.bank, self._mblock()
        d = bank.rank_dim
        if self.implementation == "reconstructed":
            m = mb.reshape(self.a, d, self.b, d)
            w = torch.einsum("ip,apbq,jq->aibj", bank.U, m, bank.V)  # (a, D, b, D), y = x W
            return w.reshape(self.in_features, self.out_features).T.contiguous()
        if self.form == "fold":  # G = M blockdiag(V^T): (a*d) x (b*D)
            g = torch.einsum("apbq,jq->apbj", mb.reshape(self.a, d, self.b, d), bank.V)
            return g.reshape(self.a * d, self.out_features).T.contiguous()
        # fold_in: H = blockdiag(U) M: (a*D) x (b*d)
        h = torch.einsum("ip,apbq->aibq", bank.U, mb.reshape(self.a, d, self.b, d))
        return h.reshape(self.in_features, self.b * d).T.contiguous()

    def weight_for_forward(self) -> torch.Tensor:
        if not self.bank.caching():
            return self._build()
        key = (_version_key(self.bank.U, self.bank.V, self.bank.C, self.bank.P), self.implementation)
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad(), _full_precision(self.bank.P):
                self._cache = (key, self._build())
        return self._cache[1]

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    # -- forward --------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.group is not None and self.form == "fold" and self.implementation == "factorized"
                and self.bank.caching() and self.group in self.bank._groups):
            return self.bank.fused_group_forward(self, x)
        w = self.weight_for_forward()
        if self.implementation == "reconstructed":
            return F.linear(x, w, self.bias)
        if self.form == "fold":
            return F.linear(self.bank.project(x, self.a, self.group, self.group_uses), w, self.bias)
        z = F.linear(x, w)  # fold_in: (..., b*d)
        if self.b == 1:
            return F.linear(z, self.bank.V, self.bias)
        y = F.linear(z.unflatten(-1, (self.b, self.bank.rank_dim)), self.bank.V).flatten(-2)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, blocks={self.a}x{self.b}, "
                f"implementation={self.implementation!r}, form={self.form!r}, group={self.group!r}")



BANK_NAME = "tdlib_bank"


# -- what a checkpoint records, and the structure rebuilt from it --------------------------------------------
# protocol 1 (the paper's Tucker fit of the weights), two data-aware fits (tdlib.core.fitting), and two controls
INITS = ("pretrained", "whitened", "local", "random", "zero")
INIT_ALIASES = {"tucker": "pretrained"}
DATA_AWARE = ("whitened", "local")


def init_name(init: str) -> str:
    """The canonical init name (``"tucker"`` is the paper's ``"pretrained"``), or one error listing them."""
    return check_choice("init", INIT_ALIASES.get(init, init), (*INITS, *INIT_ALIASES))



@dataclass(frozen=True)
class CompressionSpec:
    """What ``config.tdlib`` stores: enough to rebuild the structure without the original model."""

    rank_layer: int
    rank_dim: int
    ops: str
    n_layers: int
    d_model: int
    ffn_blocks: int
    base_model_type: str
    implementation: str = "factorized"
    format_version: int = 1
    # how the bank was initialised (INITS); changes nothing in the forward pass. None: a checkpoint saved before
    # tdlib recorded it (its init is unknown, not necessarily the paper's)
    init: str | None = None

    @property
    def n(self) -> int:
        return len(slots(self.n_layers, self.ffn_blocks, self.ops))

    def validate(self) -> CompressionSpec:
        check_choice("ops", self.ops, OPS)
        check_choice("implementation", self.implementation, IMPLEMENTATIONS)
        check_rank("rank_dim", self.rank_dim, self.d_model, "the hidden size D")
        check_rank("rank_layer", self.rank_layer, self.n, f"the number of {self.ops} matrices n")
        if self.init is not None:
            init_name(self.init)
        return self

    @classmethod
    def from_dict(cls, data: dict) -> CompressionSpec:
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        missing = {f.name for f in fields(cls) if f.default is MISSING} - set(data)
        if unknown or missing:
            raise ConfigError(
                f"config 'tdlib' entry has unknown keys {sorted(unknown)} / lacks {sorted(missing)}; "
                f"expected keys {sorted(names)} (re-save the model with tdlib.compress(...).save_pretrained)"
            )
        return cls(**data).validate()



def apply_structure(model: nn.Module, spec: CompressionSpec, bank: TuckerBank | None = None) -> nn.Module:
    """Swap the decomposed nn.Linear modules for BankLinear over one bank, in place."""
    layers = getattr(model, "base_model", model).encoder.layer
    bank = bank or TuckerBank(spec.n, spec.d_model, spec.rank_layer, spec.rank_dim)
    index = {(s.layer, s.role, s.block): s.index for s in slots(spec.n_layers, spec.ffn_blocks, spec.ops)}
    k = spec.ffn_blocks
    for layer_id, layer in enumerate(layers):
        if spec.ops in ("san", "san_ffn"):
            members = []
            for role in ("query", "key", "value"):
                lin = get_module(layer, f"attention.self.{role}")
                members.append(BankLinear.from_linear(
                    lin, bank, [[index[layer_id, role, 0]]], group=f"{layer_id}.qkv", group_uses=3,
                    implementation=spec.implementation))
                set_module(layer, f"attention.self.{role}", members[-1])
            bank.register_group(f"{layer_id}.qkv", members)
            lin = get_module(layer, "attention.output.dense")
            set_module(layer, "attention.output.dense", BankLinear.from_linear(
                lin, bank, [[index[layer_id, "attn_out", 0]]], implementation=spec.implementation))
        if spec.ops in ("ffn", "san_ffn"):
            up = get_module(layer, "intermediate.dense")
            set_module(layer, "intermediate.dense", BankLinear.from_linear(
                up, bank, [[index[layer_id, "ffn_up", b] for b in range(k)]], implementation=spec.implementation))
            down = get_module(layer, "output.dense")
            set_module(layer, "output.dense", BankLinear.from_linear(
                down, bank, [[index[layer_id, "ffn_down", b]] for b in range(k)], implementation=spec.implementation))
    base = getattr(model, "base_model", model)
    base.encoder.add_module(BANK_NAME, bank)
    base.encoder.register_forward_pre_hook(_begin_pass)
    base.encoder.register_forward_hook(_end_pass, always_call=True)
    model.config.tdlib = asdict(spec)
    return retype(model)


def _begin_pass(encoder: nn.Module, args) -> None:
    bank = getattr(encoder, BANK_NAME, None)  # None once frozen (tdlib.freeze removes the bank)
    if bank is not None:
        bank.begin_pass()


def _end_pass(encoder: nn.Module, args, output) -> None:
    bank = getattr(encoder, BANK_NAME, None)
    if bank is not None:
        bank.end_pass()


# -- the transformers classes -------------------------------------------------------------------------------------
AUTO_MAP = {"AutoConfig": "modeling_tdlib.TdlibBertConfig", "AutoModel": "modeling_tdlib.TdlibBertModel",
            "AutoModelForSequenceClassification": "modeling_tdlib.TdlibBertForSequenceClassification"}


class TdlibBertConfig(BertConfig):
    """BERT's config with the compression it describes in ``tdlib`` (a :class:`CompressionSpec` as a dict).

    Saving it writes ``auto_map`` (this file's classes, which it copies beside config.json) and the model card."""

    model_type = "tdlib_bert"

    def save_pretrained(self, save_directory, *args, **kwargs):
        self.auto_map = {**AUTO_MAP, **(getattr(self, "auto_map", None) or {})}
        out = super().save_pretrained(save_directory, *args, **kwargs)
        write_model_card(self, save_directory)
        return out


def _spec_of(config) -> CompressionSpec:
    data = getattr(config, "tdlib", None)
    if not data:
        raise ConfigError("this config has no 'tdlib' entry (the compression's ranks and geometry): it is not a "
                          "tdlib checkpoint's; load a dense BERT with BertModel / AutoModel")
    return CompressionSpec.from_dict(dict(data))


# -- the model card every saved directory carries ------------------------------------------------------------------
PAPER = ("Ren, Wang, Shang, Jiang and Liu, *Exploring Extreme Parameter Compression for Pre-trained Language "
         "Models*, ICLR 2022 (arXiv:2205.10036)")
BIBTEX = """@inproceedings{ren2022exploring,
  title     = {Exploring Extreme Parameter Compression for Pre-trained Language Models},
  author    = {Ren, Yuxin and Wang, Benyou and Shang, Lifeng and Jiang, Xin and Liu, Qun},
  booktitle = {International Conference on Learning Representations},
  year      = {2022}
}"""


def model_card(model, library: str = "transformers", scores: dict | None = None) -> str:
    """A hub model card (YAML front matter, then markdown) of a saved model: its base model, method and ranks,
    parameters and ratio, init, the training it went through and the scores recorded for it
    (``config.tdlib_card``: ``{"training": [...], "scores": {...}}``, when tdlib's loops and studies recorded
    them, and ``scores`` over those), the paper and the artifact to cite. Values nobody recorded are said to be
    unrecorded, not guessed.

    Parameters
    ----------
    model : transformers model or config
        The saved model (compressed by tdlib, or dense), or its config alone (the card then leaves out the
        parameter total, which only the model's tensors give).
    library : {"transformers", "sentence-transformers"}
        The directory's format: the card's ``library_name`` and usage lines follow it.
    scores : dict, optional
        Scores to state (name -> value), over those recorded in ``config.tdlib_card``.

    Returns
    -------
    str
        The card, ``README.md``'s text.
    """
    config = getattr(model, "config", model)
    tensors = model if isinstance(model, nn.Module) else None
    spec = getattr(config, "tdlib", None)
    card = dict(getattr(config, "tdlib_card", None) or {})
    base = card.get("base_model") or getattr(config, "_name_or_path", "") or "unrecorded"
    lines = ["---", f"library_name: {library}", "tags:", "- tdlib", "- bert"]
    lines += ["- tucker-decomposition", "- model-compression"] if spec else ["- knowledge-distillation"]
    if base != "unrecorded" and "/" in base and not base.startswith(("/", ".")):
        lines.append(f"base_model: {base}")
    lines += ["---", ""]
    if spec:
        d, n = spec["d_model"], len(slots(spec["n_layers"], spec["ffn_blocks"], spec["ops"]))
        rl, rd = spec["rank_layer"], spec["rank_dim"]
        bank = 2 * d * rd + rl * rd * rd + n * rl  # U, V, C, P
        lines += [f"# A Tucker-compressed BERT (tdlib): IV-{spec['rank_layer']}-{spec['rank_dim']} on {spec['ops']}",
                  "", f"The {n} D x D maps of the encoder ({spec['ops']}, D = {d}) read one shared Tucker factor bank "
                  "(the paper's method IV): W_i = U (sum_j P_ij C_j) V^T.", "",
                  "| | |", "| --- | --- |", f"| base model | {base} |",
                  f"| rank_layer (l), rank_dim (d) | {spec['rank_layer']}, {spec['rank_dim']} |",
                  f"| decomposed weights | {bank:,} for {n * d * d:,} dense ({n * d * d / max(bank, 1):.1f}x) |",
                  f"| init | {spec.get('init') or 'unrecorded'} |",
                  f"| forward | {spec['implementation']} |"]
    else:
        lines += ["# A dense BERT saved by tdlib", "", "| | |", "| --- | --- |", f"| base model | {base} |",
                  f"| layers x hidden | {config.num_hidden_layers} x {config.hidden_size} |"]
    if tensors is not None:
        lines.append(f"| parameters (all) | {sum(p.numel() for p in tensors.parameters()):,} |")
    for i, stage in enumerate(card.get("training") or []):
        lines.append(f"| training {i + 1} | " + ", ".join(f"{k} {v}" for k, v in stage.items()) + " |")
    if not card.get("training"):
        lines.append("| training | unrecorded (none by tdlib's loops) |")
    for name, value in {**(card.get("scores") or {}), **(scores or {})}.items():
        lines.append(f"| {name} | {value} |")
    remote = ", trust_remote_code=True" if spec else ""
    if library == "sentence-transformers":
        use = ["from sentence_transformers import SentenceTransformer", "import tdlib  # registers tdlib_bert",
               "model = SentenceTransformer(path)", "embeddings = model.encode(['A sentence.', 'Another one.'])",
               f"# where tdlib is not installed: SentenceTransformer(path{remote})"]
    else:
        use = ["import tdlib", "model = tdlib.from_pretrained(path)",
               f"# where tdlib is not installed: transformers.AutoModel.from_pretrained(path{remote})"]
    lines += ["", "## Use", "", "```python", *use, "```", "",
              "## Citation", "", f"The method: {PAPER}.", "", "```bibtex", BIBTEX, "```", "",
              "Made with tdlib, the paper's reference artifact (see its CITATION.cff).", ""]
    return "\n".join(lines)


def write_model_card(model, directory, library: str = "transformers", scores: dict | None = None) -> None:
    """Write :func:`model_card` as ``directory/README.md``."""
    with open(f"{directory}/README.md", "w", encoding="utf-8") as f:
        f.write(model_card(model, library, scores))


class TdlibBertModel(BertModel):
    """A BERT encoder whose maps read one Tucker bank (``AutoModel`` of a ``tdlib_bert`` checkpoint)."""

    config_class = TdlibBertConfig

    def __init__(self, config, add_pooling_layer: bool = True) -> None:
        super().__init__(config, add_pooling_layer=add_pooling_layer)
        apply_structure(self, _spec_of(config))


# the task heads that are not BERT's [CLS] head (tdlib.core.heads): their checkpoints name them, and read with the
# [CLS] head they would give other outputs without a word
OTHER_HEADS = ("BertMeanPooledForSequenceClassification", "BertCosinePairForSequenceClassification")


class TdlibBertForSequenceClassification(BertForSequenceClassification):
    """BERT's [CLS] classification head over a compressed encoder (``AutoModelForSequenceClassification``)."""

    config_class = TdlibBertConfig

    def __init__(self, config) -> None:
        head = (config.architectures or [""])[0]
        if head in OTHER_HEADS:
            raise ConfigError(f"this checkpoint's head is tdlib's {head}, which BERT's [CLS] head would not compute: "
                              "load it with tdlib.from_pretrained(dir), or its encoder with AutoModel")
        super().__init__(config)
        apply_structure(self, _spec_of(config))


TdlibBertConfig.register_for_auto_class()  # save_pretrained copies this file beside config.json


def retype(model: nn.Module) -> nn.Module:
    """Give a compressed BERT the ``tdlib_bert`` config: the same config object (its submodules share it), its class
    swapped for :class:`TdlibBertConfig`, which adds no state. Saved, it names model type ``tdlib_bert`` and the
    ``auto_map``, so the Auto classes build :class:`TdlibBertModel` (or the classification head) for it, or refuse;
    the model keeps its class (``BertModel``, a tdlib head), whose forward is BERT's."""
    if type(model.config) is BertConfig:
        model.config.__class__ = TdlibBertConfig
    return model
