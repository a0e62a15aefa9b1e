"""Data-aware inits of the shared Tucker bank: fit the teacher's *function*, not only its weights.

The paper's init (``compress(init="pretrained")``, alias ``"tucker"``) fits HOOI to the stacked weights. Two
data-aware alternatives use a :class:`tdlib.core.calibrate.Calibration`:

- :func:`whitened_tucker` (``init="whitened"``): HOOI on the input-whitened tensor S^{1/2} W_i, with S the
  sum of the maps' trace-normalised input Grams (Basis Sharing's whitening of a shared basis), then
  U = S^{-1/2} U'. When every map reads the same input, this is the exact minimiser of the activation-weighted
  objective sum_i ||X (W_i - U M_i V^T)||^2 (up to HOOI's own optimality), and it *is* plain Tucker when the
  inputs are isotropic (S = c I).
- :class:`BlockwiseFit` (``init="local"``): start from a closed-form fit, then a short teacher-forced,
  block-wise reconstruction: every layer's factors and biases are trained so that the layer maps the
  teacher's layer input to the teacher's layer output, all layers at once (each layer's loss is
  independent of the others' errors, and the shared bank couples them). The loss is the MSE per hidden
  dimension standardised by the teacher's spread in that dimension: raw MSE is dominated by a few
  outlier dimensions. This is not general distillation: no corpus pass, no full-model forward, a fixed small
  calibration set, a few minutes on two cores.

:func:`activation_error` is the objective the whitened fits minimise, reported beside the plain weight error.
:func:`whitened_per_matrix` is the per-matrix peer (method II with SVD-LLM's whitening), for a fair picture.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from tdlib.core.calibrate import Calibration
from tdlib.core.errors import ConfigError, DataError
from tdlib.core.functional import hooi
from tdlib.core.layers import bank_of
from tdlib.core.modeling_tdlib import BankLinear
from tdlib.core.stacking import encoder_layers

DAMPING = 1e-4  # relative ridge added to a Gram before its square root is inverted


def _normalised(grams: torch.Tensor) -> torch.Tensor:
    """Each Gram scaled to trace D: every map weighs the same, whatever its input's scale (GELU vs LayerNorm)."""
    d_model = grams.shape[-1]
    trace = grams.diagonal(dim1=-2, dim2=-1).sum(-1).clamp(min=torch.finfo(grams.dtype).tiny)
    return grams * (d_model / trace)[:, None, None]


def sqrt_and_inverse(gram: torch.Tensor, damping: float = DAMPING) -> tuple[torch.Tensor, torch.Tensor]:
    """S^{1/2} and S^{-1/2} of a symmetric PSD matrix, with a ridge of ``damping`` x mean eigenvalue.

    Why the ridge: a Gram from few tokens, or of dimensions the text never excites (dead features), is
    singular or nearly so, and S^{-1/2} would blow those directions up. The ridge keeps every eigenvalue at
    least ``damping`` times the average, so the factors stay finite and the fit degrades gracefully to plain
    Tucker in the directions the data do not reach.
    """
    if damping <= 0:
        raise ConfigError(f"damping must be > 0 (a singular Gram has no inverse square root), got {damping}")
    gram = gram.double()
    gram = (gram + gram.T) / 2
    vals, vecs = torch.linalg.eigh(gram)
    mean = float(vals.clamp(min=0).mean())
    if not math.isfinite(mean) or mean <= 0:
        raise DataError("an input Gram is zero or not finite: the calibration text never reached these maps "
                        "(calibrate on real text, with more tokens)")
    vals = vals.clamp(min=0) + damping * mean
    return (vecs * vals.sqrt()) @ vecs.T, (vecs * vals.rsqrt()) @ vecs.T


def shared_input_gram(grams: torch.Tensor) -> torch.Tensor:
    """The Gram a shared input factor U sees: the sum of the maps' trace-normalised Grams."""
    return _normalised(grams.double()).sum(0)


def whitened_tucker(tensor: torch.Tensor, grams: torch.Tensor, rank_layer: int, rank_dim: int,
                    damping: float = DAMPING, n_iter_max: int = 100, tol: float = 1e-4) -> dict[str, torch.Tensor]:
    """Tucker factors (P, C, U, V) of ``tensor`` (n, D, D) fitted in the input-whitened space.

    Returns a dict ready for :meth:`tdlib.core.layers.TuckerBank.init_from`; U is not orthonormal (it carries
    S^{-1/2}), which the bank does not require.
    """
    root, inv_root = sqrt_and_inverse(shared_input_gram(grams), damping)
    whitened = torch.einsum("ab,nbc->nac", root.float(), tensor.float())
    core, (p, u_white, v), _ = hooi(whitened, (rank_layer, rank_dim, rank_dim), n_iter_max=n_iter_max, tol=tol)
    u = (inv_root.float() @ u_white).contiguous()
    return {"P": p, "C": core, "U": u, "V": v}


def whitened_per_matrix(tensor: torch.Tensor, grams: torch.Tensor, rank: int,
                        damping: float = DAMPING) -> torch.Tensor:
    """Method II with SVD-LLM's whitening: each W_i truncated to rank ``rank`` in its own input's metric.

    W_i ~ G_i^{-1/2} [G_i^{1/2} W_i]_rank minimises ||X_i (W_i - W_hat)|| over rank-``rank`` matrices
    (Eckart-Young in the whitened space). Returns the reconstructed (n, D, D) tensor.
    """
    out = torch.empty_like(tensor, dtype=torch.float32)
    for i, (w, g) in enumerate(zip(tensor, grams, strict=True)):
        root, inv_root = sqrt_and_inverse(g, damping)
        u, s, vh = torch.linalg.svd(root @ w.double(), full_matrices=False)
        out[i] = (inv_root @ (u[:, :rank] * s[:rank]) @ vh[:rank]).float()
    return out


def activation_error(approx: torch.Tensor, tensor: torch.Tensor, grams: torch.Tensor) -> float:
    """sqrt(sum_i ||X_i (W_i - W_hat_i)||^2 / sum_i ||X_i W_i||^2), each map's Gram trace-normalised.

    The error of every map's *output* on the calibration text, relative to the outputs themselves; with
    isotropic inputs it equals the plain relative weight error.
    """
    g = _normalised(grams.double())
    diff = tensor.double() - approx.double()
    num = torch.einsum("nab,nac,ncb->", diff, g, diff)
    den = torch.einsum("nab,nac,ncb->", tensor.double(), g, tensor.double())
    return float((num / den).clamp(min=0).sqrt())


# -- the block-wise fit ------------------------------------------------------------------------------
class _StopForward(Exception):
    pass


@torch.no_grad()
def layer_masks(model: nn.Module, calibration: Calibration, batch_size: int = 64) -> torch.Tensor:
    """The attention mask the encoder hands its layers, for every calibration sequence.

    Its form (boolean or additive, 2-D or 4-D) depends on the transformers version and attention
    implementation, so it is captured from the model itself: the embeddings run, then the first layer's
    call is intercepted.
    """

    encoder = getattr(model, "base_model", model)
    seen: list[torch.Tensor] = []

    def grab(_module, args, kwargs):
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        seen.append(mask)
        raise _StopForward

    handle = encoder_layers(model)[0].register_forward_pre_hook(grab, with_kwargs=True)
    device = next(encoder.parameters()).device
    ids = torch.zeros_like(calibration.attention_mask).to(device)
    try:
        for start in range(0, len(ids), batch_size):
            try:
                encoder(input_ids=ids[start:start + batch_size],
                        attention_mask=calibration.attention_mask[start:start + batch_size].to(device))
            except _StopForward:
                pass
    finally:
        handle.remove()
    if any(m is None for m in seen):
        raise ConfigError("the encoder passes its layers no attention mask; the block-wise fit needs one")
    return torch.cat(seen)


@dataclass
class BlockwiseFit:
    """Teacher-forced block-wise reconstruction of a compressed model (scikit-learn style: settings here,
    work in :meth:`fit`).

    ``steps`` Adam steps of ``batch_size`` calibration sequences, lr ``lr`` decaying linearly to zero; trains
    the bank's factors and the compressed maps' biases (LayerNorms and embeddings stay the teacher's).
    """

    steps: int = 100
    lr: float = 3e-3
    batch_size: int = 16
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"BlockwiseFit.{name} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise ConfigError(f"BlockwiseFit.lr must be > 0, got {self.lr!r}")

    def as_dict(self) -> dict:
        return {"steps": self.steps, "lr": self.lr, "batch_size": self.batch_size, "seed": self.seed}

    def trainable(self, model: nn.Module) -> list[nn.Parameter]:
        params = list(bank_of(model).parameters())
        params += [m.bias for m in model.modules() if isinstance(m, BankLinear) and m.bias is not None]
        return params

    def loss(self, model: nn.Module, calibration: Calibration, index: torch.Tensor, masks: torch.Tensor,
             scale: torch.Tensor) -> torch.Tensor:
        """Mean over layers of the standardised MSE of each layer's output given the teacher's input."""

        device = masks.device
        valid = calibration.attention_mask[index].bool().to(device)
        total = 0.0
        layers = encoder_layers(model)
        for layer_id, layer in enumerate(layers):
            out = layer(calibration.hidden[layer_id, index].to(device), attention_mask=masks[index])
            out = out[0] if isinstance(out, tuple) else out
            diff = (out - calibration.hidden[layer_id + 1, index].to(device))[valid] / scale[layer_id]
            total = total + diff.pow(2).mean()
        return total / len(layers)

    def scales(self, calibration: Calibration) -> torch.Tensor:
        """Per layer and hidden dimension, the teacher's output spread (std over valid tokens), floored."""
        valid = calibration.attention_mask.bool()
        out = calibration.hidden[1:][:, valid]  # (L, tokens, D)
        std = out.std(dim=1)
        return std.clamp(min=1e-3 * float(std.mean()))

    def fit(self, model: nn.Module, calibration: Calibration) -> dict:
        """Train ``model``'s bank in place; returns the loss history and wall time."""

        if calibration.n_layers != len(encoder_layers(model)):
            raise ConfigError(f"the calibration has {calibration.n_layers} layers, the model "
                              f"{len(encoder_layers(model))}: calibrate this model's teacher")
        start = time.perf_counter()
        masks = layer_masks(model, calibration)  # on the model's device, like the layers' inputs in loss()
        scale = self.scales(calibration).to(masks.device)
        params = self.trainable(model)
        opt = torch.optim.Adam(params, lr=self.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 - step / self.steps)
        gen = torch.Generator().manual_seed(self.seed)
        dropouts = [(m, m.p) for m in model.modules() if isinstance(m, nn.Dropout)]
        was_training = model.training
        model.train()
        for m, _ in dropouts:  # a deterministic fit: no dropout
            m.p = 0.0
        history = []
        n = calibration.hidden.shape[1]
        try:
            with torch.no_grad():
                first = float(self.loss(model, calibration, torch.arange(min(n, self.batch_size)), masks, scale))
            bar = tqdm(range(self.steps), desc="block-wise fit", disable=not self.progress, leave=False)
            for _ in bar:
                index = torch.randint(0, n, (min(n, self.batch_size),), generator=gen)
                loss = self.loss(model, calibration, index, masks, scale)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                history.append(float(loss.detach()))
                bar.set_postfix(loss=f"{history[-1]:.4f}")
        finally:
            for m, p in dropouts:
                m.p = p
            model.train(was_training)
        return {"initial_loss": first, "loss": history, "seconds": time.perf_counter() - start,
                **self.as_dict()}
