"""Calibration: what a data-aware init needs to know about the teacher's activations, collected once.

Why: the paper's Tucker init minimises ||W - W_hat|| and treats every input direction and every layer alike,
so at the cpu profile's ratios the compressed model starts where a model with all its maps set to zero
starts (../shared/PAPER.md). A fit to the *function* needs the teacher's activations on real text:

- ``hidden``: every layer's input and output, (L + 1, N, T, D): layer l reads ``hidden[l]`` and writes
  ``hidden[l + 1]`` (the block-wise fit of :mod:`tdlib.core.fitting` matches these);
- ``grams``: the input Gram matrix X_i^T X_i of every stacked map i, (n, D, D) in float64, over the valid
  tokens (activation-weighted errors and the whitened fits). Q, K and V read one input and share one Gram,
  as do the k FFN-up blocks; FFN-down block b reads block b of the GELU output.

The default text is the corpus's held-out shard (:func:`tdlib.data.corpus.heldout_path`) *after* the sequences
that the recovery proxies read (:data:`PROXY_SEQUENCES`), so the fit never sees the text it is measured on,
and never GLUE. A calibration is cached on disk per (teacher weights, text, sequences, length, ops): safetensors
plus a ``meta.json`` with the identity and a sha256 of the tensors file; a foreign or corrupt cache is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from tdlib.core.errors import DataError
from tdlib.core.io import sha256_file, write_json_atomic
from tdlib.core.modeling_tdlib import get_module
from tdlib.core.stacking import encoder_layers, geometry, model_slots

PROXY_SEQUENCES = 256  # the held-out sequences the recovery proxies read first (tdlib.distill.proxies): skipped here


@dataclass
class Calibration:
    """The teacher's activations on calibration text (see the module docstring for the fields)."""

    hidden: torch.Tensor  # (L + 1, N, T, D) float32
    attention_mask: torch.Tensor  # (N, T) long
    grams: torch.Tensor  # (n, D, D) float64
    ops: str = "san_ffn"
    identity: dict = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def n_layers(self) -> int:
        return self.hidden.shape[0] - 1

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``tensors.safetensors`` and ``meta.json`` (last, so a half-written cache is never whole)."""

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = path / "tensors.safetensors"
        tmp = tensors.with_suffix(".tmp")
        save_file({"hidden": self.hidden.contiguous(), "attention_mask": self.attention_mask.contiguous(),
                   "grams": self.grams.contiguous()}, str(tmp))
        os.replace(tmp, tensors)
        write_json_atomic(path / "meta.json", {"identity": self.identity, "ops": self.ops,
                                               "sha256": sha256_file(tensors)})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, identity: dict | None = None) -> Calibration | None:
        """The cached calibration at ``path``, or None if it is missing, foreign (another identity) or corrupt."""

        path = Path(path)
        meta_file, tensors = path / "meta.json", path / "tensors.safetensors"
        if not (meta_file.is_file() and tensors.is_file()):
            return None
        try:
            meta = json.loads(meta_file.read_text())
        except json.JSONDecodeError:
            return None
        if identity is not None and meta.get("identity") != json.loads(json.dumps(identity, default=str)):
            return None
        if meta.get("sha256") != sha256_file(tensors, memo=False):
            return None
        data = load_file(str(tensors))
        return cls(data["hidden"], data["attention_mask"], data["grams"], meta.get("ops", "san_ffn"),
                   meta.get("identity", {}))


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 (12 hex digits) of the model's encoder weights: a cache key that follows the weights, not a name."""
    digest = hashlib.sha256()
    for name, tensor in sorted(getattr(model, "base_model", model).encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:12]



@torch.no_grad()
def calibrate(teacher: nn.Module, dataset, ops: str = "san_ffn", batch_size: int = 32,
              identity: dict | None = None, progress: bool = True) -> Calibration:
    """Run the teacher over ``dataset`` (``input_ids``, ``attention_mask``, padded to one length: a
    ``datasets.Dataset`` or a dict of tensors) once.

    Collects every layer's input and output and each stacked map's input Gram (forward hooks on the
    teacher's own ``nn.Linear`` maps, so what is measured is exactly what the maps read). Needs at least D
    valid tokens: fewer leave every Gram singular (the whitened fits damp them, but the weights would then
    be fitted to a subspace the text never reached); the error names the fix.

    Parameters
    ----------
    teacher : transformers model
        The dense model to measure.
    dataset : datasets.Dataset or dict of tensors
        ``input_ids`` and ``attention_mask``, padded to one length.
    ops : {"san_ffn", "san", "ffn"}
        The maps whose input Grams are collected.
    batch_size : int
        Sequences per forward.
    identity : dict, optional
        What the calibration was made from (kept with it, compared when loaded).
    progress : bool
        Show progress.

    Returns
    -------
    Calibration
        Every layer's input and output hidden states, the attention mask, and each map's input Gram.
    """
    encoder = getattr(teacher, "base_model", teacher)
    layers = encoder_layers(teacher)
    n_layers, d_model, k = geometry(teacher, ops)
    rows = dataset if isinstance(dataset, dict) else dataset[:]
    ids, mask = torch.as_tensor(rows["input_ids"]), torch.as_tensor(rows["attention_mask"])
    if int(mask.sum()) < d_model:
        raise DataError(f"calibration text has {int(mask.sum())} tokens, fewer than the hidden size D={d_model}: "
                        "every input Gram would be singular; calibrate on more sequences")
    slots = model_slots(teacher, ops)
    grams = torch.zeros(len(slots), d_model, d_model, dtype=torch.float64)
    by_input: dict[tuple[int, str], list] = {}  # (layer, module path) -> [(slot index, input block)]
    for s in slots:
        path = "attention.self.query" if s.role in ("key", "value") else s.path
        block = s.block if s.role == "ffn_down" else None
        by_input.setdefault((s.layer, path), []).append((s.index, block))
    current: dict[str, torch.Tensor] = {}

    def hook(key):
        def fn(_module, args):
            x = args[0].detach()[current["mask"]].double()  # valid tokens only, (tokens, in_features)
            for index, block in by_input[key]:
                xb = x if block is None else x[:, block * d_model:(block + 1) * d_model]
                grams[index] += (xb.T @ xb).cpu()
        return fn

    handles = [get_module(layers[layer], path).register_forward_pre_hook(hook((layer, path)))
               for layer, path in by_input]
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    hidden = []
    try:
        for start in tqdm(range(0, len(ids), batch_size), desc="calibrate", disable=not progress, leave=False):
            batch_ids, batch_mask = (t[start:start + batch_size].to(device) for t in (ids, mask))
            current["mask"] = batch_mask.bool()
            out = encoder(input_ids=batch_ids, attention_mask=batch_mask, output_hidden_states=True)
            hidden.append(torch.stack(out.hidden_states).float().cpu())
    finally:
        for h in handles:
            h.remove()
        encoder.train(was_training)
    return Calibration(torch.cat(hidden, dim=1), mask, grams, ops, dict(identity or {}))


