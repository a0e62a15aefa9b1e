"""The compressed model: a Hugging Face BERT-family model whose decomposed maps read one Tucker bank.

``compress(model, rank_layer, rank_dim, ops)`` returns a copy of ``model`` (any head: BertModel,
BertForSequenceClassification, ...) in which the n = 4L / 8L / 12L decomposed D x D maps are
``BankLinear`` modules over one ``TuckerBank`` stored at ``base_model.encoder.tdlib_bank``.
Biases, LayerNorms, embeddings, pooler and heads are the original modules, untouched.

Protocol 1 (decomposition): ``init="pretrained"`` fits Tucker (HOOI) to the stacked pre-trained
weights and starts the bank from it; distillation (``tdlib.distill.stages``) then trains every factor.
Protocol 2 (reconstruction): ``implementation="factorized"`` runs x -> xU -> M -> V^T.

The model stays a ``transformers`` model: ``save_pretrained`` writes safetensors plus a config
whose ``tdlib`` entry records the ranks, ops and base architecture; :func:`from_pretrained`
rebuilds the structure from that entry and loads the weights, offline. A compressed BERT is of the
``tdlib_bert`` classes of :mod:`tdlib.core.modeling_tdlib` (registered here with transformers' Auto classes), so
its checkpoint also loads through ``AutoModel`` / ``AutoModelForSequenceClassification`` (and, without tdlib,
with ``trust_remote_code=True`` from the model file saved beside it).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import transformers
from torch import nn

from tdlib.core.decompose import Tucker
from tdlib.core.errors import CheckpointError, ConfigError, check_choice
from tdlib.core.fitting import BlockwiseFit, whitened_tucker
from tdlib.core.heads import HEADS
from tdlib.core.io import _read_state_dict
from tdlib.core.layers import FactorStack, StackLinear
from tdlib.core.modeling_tdlib import (
    BANK_NAME,
    DATA_AWARE,
    IMPLEMENTATIONS,
    OPS,
    BankLinear,
    CompressionSpec,
    TdlibBertConfig,
    TdlibBertForSequenceClassification,
    TdlibBertModel,
    TuckerBank,
    apply_structure,
    get_module,
    init_name,
    set_module,
    slots,
)
from tdlib.core.stacking import encoder_layers, geometry, stack_weights

transformers.AutoConfig.register(TdlibBertConfig.model_type, TdlibBertConfig, exist_ok=True)
transformers.AutoModel.register(TdlibBertConfig, TdlibBertModel, exist_ok=True)
transformers.AutoModelForSequenceClassification.register(TdlibBertConfig, TdlibBertForSequenceClassification,
                                                         exist_ok=True)
CLASSES = {cls.__name__: cls for cls in (TdlibBertModel, TdlibBertForSequenceClassification)}


def compression_spec(model: nn.Module) -> CompressionSpec | None:
    """The spec of a compressed model, or None for a dense one.

    Parameters
    ----------
    model : transformers model
        Any model.

    Returns
    -------
    CompressionSpec or None
        Ranks, ops, geometry and implementation of a compressed model; None for a dense one.
    """
    data = getattr(model.config, "tdlib", None)
    return CompressionSpec.from_dict(data) if data else None




def compress(
    model: nn.Module,
    rank_layer: int,
    rank_dim: int,
    ops: str = "san_ffn",
    init: str = "pretrained",
    implementation: str = "factorized",
    seed: int = 0,
    n_iter_max: int = 100,
    tol: float = 1e-4,
    inplace: bool = False,
    progress: bool = False,
    calibration=None,
    fit=None,
) -> nn.Module:
    """Compress a BERT-family model to Tucker rank (rank_layer, rank_dim) on the ``ops`` maps.

    ``init="pretrained"`` (alias ``"tucker"``) starts from the Tucker decomposition of the model's own weights
    (the paper's decomposition protocol; the fit is kept as ``model.tdlib_decomposition``). Two data-aware
    inits need ``calibration`` (a :class:`tdlib.core.calibrate.Calibration` of this model): ``"whitened"`` fits
    Tucker in the input-whitened space (:func:`tdlib.core.fitting.whitened_tucker`), ``"local"`` starts from the
    Tucker fit and runs a teacher-forced block-wise reconstruction (``fit``: a
    :class:`tdlib.core.fitting.BlockwiseFit`, default settings when None; its report is kept as
    ``model.tdlib_fit``). Controls: ``"random"`` starts from random factors of BERT's init scale, ``"zero"``
    from random factors with a zero core, so every compressed map starts at W_i = 0 (the floor an init must
    beat: embeddings, biases and LayerNorms alone) yet trains: the core's gradient is not zero given non-zero
    biases, as a pre-trained model has. The init is recorded in ``config.tdlib["init"]``; it changes nothing
    in the forward pass or the parameter count. Returns a new model unless ``inplace``.

    Parameters
    ----------
    model : transformers model
        A BERT-family encoder or task model (``BertModel``, ``BertForSequenceClassification``, ...).
    rank_layer : int
        l, the number of d x d matrices in the shared bank C (with ``rank_dim``, sets the parameter count).
    rank_dim : int
        d, the width of the shared factors U and V (D x d): sets the speed (about 2Dd multiply-adds per map).
    ops : {"san_ffn", "san", "ffn"}
        The maps to compress: attention and FFN, attention only, or FFN only.
    init : {"pretrained", "tucker", "whitened", "local", "random", "zero"}
        How the factors start (protocol 1); see above.
    implementation : {"factorized", "reconstructed"}
        The forward: x U, M_i, V^T (the paper's reconstruction protocol) or the rebuilt dense W_i.
    seed, n_iter_max, tol : int, int, float
        The Tucker fit's seed and stopping rule (HOOI).
    inplace : bool
        Compress ``model`` itself instead of a copy.
    progress : bool
        Show the fit's progress.
    calibration : Calibration, optional
        The teacher's activations (:func:`tdlib.calibrate`); needed by the data-aware inits.
    fit : BlockwiseFit, optional
        The block-wise fit's settings (``init="local"``).

    Returns
    -------
    transformers model
        The compressed model, of the input's class, with a ``config.tdlib`` entry that ``save_pretrained`` keeps.
    """
    init = init_name(init)
    if init in DATA_AWARE and calibration is None:
        raise ConfigError(f"init={init!r} fits the teacher's activations: pass calibration=tdlib.calibrate(teacher, "
                          "texts) (or tdlib.data.calibration.cached_calibration), or use init='pretrained'")
    check_choice("ops", ops, OPS)
    n_layers, d_model, k = geometry(model, ops)
    if compression_spec(model) is not None:
        raise ConfigError("model is already compressed; compress the dense teacher instead")
    spec = CompressionSpec(rank_layer, rank_dim, ops, n_layers, d_model, k, model.config.model_type,
                           implementation, init=init).validate()
    if calibration is not None and calibration.ops != ops:
        raise ConfigError(f"the calibration was collected for ops={calibration.ops!r}, not {ops!r}; recalibrate")
    bank = TuckerBank(spec.n, d_model, rank_layer, rank_dim)
    decomposition = None
    if init in ("pretrained", "local"):
        decomposition = Tucker(rank_layer, rank_dim, n_iter_max=n_iter_max, tol=tol, seed=seed,
                               progress=progress).fit(stack_weights(model, ops))
        bank.init_from(decomposition.P, decomposition.C, decomposition.U, decomposition.V)
    elif init == "whitened":
        bank.init_from(**whitened_tucker(stack_weights(model, ops), calibration.grams, rank_layer, rank_dim,
                                         n_iter_max=n_iter_max, tol=tol))
    else:
        bank.init_random(seed)
        if init == "zero":
            with torch.no_grad():
                bank.C.zero_()
    ref = next(model.parameters())
    out = model if inplace else copy.deepcopy(model)
    apply_structure(out, spec, bank.to(device=ref.device, dtype=ref.dtype))
    out.tdlib_decomposition = decomposition
    out.tdlib_fit = None
    if init == "local":
        out.tdlib_fit = (fit or BlockwiseFit(seed=seed, progress=progress)).fit(out, calibration)
    return out


def with_decomposition(model: nn.Module, fit, ops: str = "san_ffn") -> nn.Module:
    """A copy of ``model`` whose ``ops`` maps read from ``fit`` (any method) as trainable factors.

    The model side of the C1 comparison: ``fit`` is a fitted :mod:`tdlib.core.decompose` object of the
    model's own stacked weights. Not saved by ``save_pretrained`` in a reloadable form; it exists to
    be distilled and evaluated in one process.
    """
    n_layers, _, k = geometry(model, ops)
    out = copy.deepcopy(model)
    stack = FactorStack(fit)
    index = {(s.layer, s.role, s.block): s.index for s in slots(n_layers, k, ops)}
    roles = sorted({(s.role, s.path) for s in slots(n_layers, k, ops)})
    for layer_id, layer in enumerate(encoder_layers(out)):
        for role, path in roles:
            if role == "ffn_up":
                grid = [[index[layer_id, role, b] for b in range(k)]]
            elif role == "ffn_down":
                grid = [[index[layer_id, role, b]] for b in range(k)]
            else:
                grid = [[index[layer_id, role, 0]]]
            set_module(layer, path, StackLinear(stack, grid, get_module(layer, path).bias))
    getattr(out, "base_model", out).encoder.add_module("tdlib_stack", stack)
    return out


def set_implementation(model: nn.Module, implementation: str) -> nn.Module:
    """Switch every BankLinear of a compressed model between 'factorized' and 'reconstructed'.

    Parameters
    ----------
    model : transformers model
        A compressed model.
    implementation : {"factorized", "reconstructed"}
        x U, M_i, V^T (never a D x D matrix), or the rebuilt dense W_i (the naive protocol, for comparison).

    Returns
    -------
    transformers model
        ``model`` itself.
    """
    check_choice("implementation", implementation, IMPLEMENTATIONS)
    if getattr(model.config, "tdlib", None) is None:
        raise ConfigError(f"{type(model).__name__} is not compressed by tdlib, so it has no implementation to set; "
                          "compress it first (tdlib.compress) or load a tdlib checkpoint")
    for module in model.modules():
        if isinstance(module, BankLinear):
            module.implementation = implementation
    model.config.tdlib = {**model.config.tdlib, "implementation": implementation}
    return model


@torch.no_grad()
def reconstruct_dense(model: nn.Module) -> nn.Module:
    """A dense copy of a compressed model: each BankLinear replaced by the nn.Linear it computes.

    Parameters
    ----------
    model : transformers model
        A compressed model.

    Returns
    -------
    transformers model
        A dense copy (``nn.Linear`` maps) that computes what ``model`` computes.
    """
    out = copy.deepcopy(model).eval()
    for layer in encoder_layers(out):
        for name, module in list(layer.named_modules()):
            if isinstance(module, BankLinear):
                module.implementation = "reconstructed"
                lin = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
                lin.weight.copy_(module.weight_for_forward())
                if module.bias is not None:
                    lin.bias.copy_(module.bias)
                set_module(layer, name, lin.to(module.bias if module.bias is not None else lin.weight))
    base = getattr(out, "base_model", out)
    delattr(base.encoder, BANK_NAME)
    del out.config.tdlib
    return out



def from_pretrained(path: str | Path, implementation: str | None = None) -> nn.Module:
    """Load a model written by ``compress(...).save_pretrained(path)`` (offline, safetensors).

    Parameters
    ----------
    path : str or Path
        The directory ``save_pretrained`` wrote (config.json with a ``tdlib`` entry, model.safetensors).
    implementation : {"factorized", "reconstructed"}, optional
        The forward to use; default: the one saved.

    Returns
    -------
    transformers model
        The compressed model, its factors as saved.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} is not a saved model directory (no config.json); "
                              "pass the directory given to save_pretrained")
    try:
        config = transformers.AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}/config.json cannot be read ({exc}); re-save the model") from None
    data = getattr(config, "tdlib", None)
    if not data:
        raise CheckpointError(f"{path} holds a dense model (its config has no 'tdlib' entry); "
                              "load it with transformers, or compress it with tdlib.compress")
    spec = CompressionSpec.from_dict(dict(data))
    arch = (config.architectures or ["AutoModel"])[0]
    cls = HEADS.get(arch) or CLASSES.get(arch) or getattr(transformers, arch, None)
    if cls is None:
        raise CheckpointError(f"{path}: unknown architecture {arch!r} in config.json")
    model = cls(config)
    if not any(isinstance(m, TuckerBank) for m in model.modules()):  # the tdlib_bert classes build it themselves
        apply_structure(model, spec)
    state = _read_state_dict(path)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # size mismatches
        raise CheckpointError(f"{path} does not match its config: {str(exc).splitlines()[-1].strip()}; "
                              "the checkpoint is corrupt or from another configuration") from None
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{path} does not match its config: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}; "
            "the checkpoint is corrupt or from another configuration"
        )
    if tied:
        model.tie_weights()
    if implementation:
        set_implementation(model, implementation)
    return model.eval()


# -- parameter accounting --------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamCount:
    """Parameter counts by role; ratios as the paper states them (encoder weights only, and with biases/LN)."""

    decomposed: int  # bank (compressed) or the raw decomposable weights (dense)
    raw_decomposable: int  # n D^2 of the same maps in the dense model
    encoder_other_weights: int  # encoder weights outside ``ops`` (e.g. the FFN when ops='san')
    encoder_bias_ln: int
    embeddings: int
    head: int  # pooler, classifier and anything else
    total: int

    @property
    def ratio(self) -> float:
        """Compression of the decomposed weights: n D^2 / parameters that replace them."""
        return self.raw_decomposable / self.decomposed

    @property
    def encoder(self) -> int:
        return self.decomposed + self.encoder_other_weights + self.encoder_bias_ln

    @property
    def ratio_with_bias_ln(self) -> float:
        dense = self.raw_decomposable + self.encoder_other_weights + self.encoder_bias_ln
        return dense / self.encoder

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "ratio_with_bias_ln": self.ratio_with_bias_ln,
                "encoder": self.encoder}


def count_params(model: nn.Module, ops: str = "san_ffn") -> ParamCount:
    """Count parameters by role; for a compressed model ``ops`` is read from its config.

    Parameters
    ----------
    model : transformers model
        A dense or a compressed model.
    ops : {"san_ffn", "san", "ffn"}
        The maps counted as decomposable (a dense model's; a compressed model's come from its config).

    Returns
    -------
    ParamCount
        ``decomposed`` (the weights that replace the compressed maps, as the paper counts them),
        ``raw_decomposable`` (n D^2 of the same maps dense), ``ratio`` (their quotient), and the encoder's other
        weights, biases and LayerNorms, embeddings, head and total.
    """
    spec = compression_spec(model)
    ops = spec.ops if spec else ops
    n_layers, d_model, k = geometry(model, ops)
    n = len(slots(n_layers, k, ops))
    base = getattr(model, "base_model", model)
    enc_prefix = "encoder."
    decomposed = other = bias_ln = emb = head = 0
    roles = {"san": ("attention.self.", "attention.output.dense."), "ffn": ("intermediate.dense.", "output.dense.")}
    chosen = roles["san"] + roles["ffn"] if ops == "san_ffn" else roles[ops]
    for name, p in base.named_parameters():
        if name.startswith(enc_prefix + BANK_NAME):
            decomposed += p.numel()
        elif name.startswith(enc_prefix):
            if name.endswith(".weight") and p.ndim == 2:
                inner = name.split(".", 3)[3]  # encoder.layer.<i>.<inner>
                if any(inner.startswith(r) for r in chosen):
                    decomposed += p.numel()
                else:
                    other += p.numel()
            else:
                bias_ln += p.numel()
        elif name.startswith("embeddings."):
            emb += p.numel()
        else:
            head += p.numel()
    total = sum(p.numel() for p in model.parameters())
    head += total - sum(p.numel() for p in base.parameters())
    return ParamCount(decomposed, n * d_model * d_model, other, bias_ln, emb, head, total)
