"""How close each init starts to the teacher, before any distillation (notebook 07, issue #16).

For one teacher, rank configuration and init, :func:`measure_init` builds the student and reports:
``weight_error`` (||W - W_hat|| / ||W||), ``activation_error`` (:func:`tdlib.core.fitting.activation_error`),
``hidden_error`` (per layer, ||h_student - h_teacher|| / ||h_teacher|| over valid tokens of held-out text),
the two recovery proxies (:class:`tdlib.distill.proxies.Proxies`: embedding cosine to the teacher, zero-shot STS-B dev)
and the wall time of the init. The held-out text of the measurements is the proxies' (the first
:data:`tdlib.core.calibrate.PROXY_SEQUENCES` sequences), which the calibration skips.

Rows beside the Tucker inits: the zero-map floor (every compressed map W_i = 0), a random init, and the
per-matrix peer at the same budget: method II by plain SVD and by SVD-LLM's whitened SVD.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from tdlib.core.calibrate import Calibration
from tdlib.core.decompose import PerMatrix, Tucker
from tdlib.core.errors import ConfigError, RankError
from tdlib.core.fitting import BlockwiseFit, activation_error, whitened_per_matrix
from tdlib.core.layers import bank_of
from tdlib.core.modeling import compress
from tdlib.core.modeling_tdlib import DATA_AWARE, init_name
from tdlib.core.pretrained import load_model, load_tokenizer
from tdlib.core.stacking import stack_weights, unstack_weights
from tdlib.data.calibration import cached_calibration
from tdlib.data.corpus import corpus_files
from tdlib.distill.proxies import Proxies, milestones, proxy_files
from tdlib.studies.provenance import seed_everything
from tdlib.studies.records import cached, load_record, locate
from tdlib.studies.runs import run_general
from tdlib.studies.settings import settings
from tdlib.studies.specs import TuckerSpec

PEERS = ("II", "II-whitened")  # per-matrix SVD at the Tucker budget: plain and SVD-LLM-whitened


@torch.no_grad()
def hidden_errors(student: nn.Module, teacher: nn.Module, dataset, batch_size: int = 32) -> list[float]:
    """Relative error of each layer's output (layers 1..L) over the valid tokens of ``dataset`` (a tokenised
    ``datasets.Dataset`` or a dict of ``input_ids``/``attention_mask`` tensors)."""
    num = den = None
    size = len(dataset["input_ids"]) if isinstance(dataset, dict) else len(dataset)
    for start in range(0, size, batch_size):
        rows = ({k: v[start:start + batch_size] for k, v in dataset.items()} if isinstance(dataset, dict)
                else dataset[start:start + batch_size])
        ids, mask = torch.as_tensor(rows["input_ids"]), torch.as_tensor(rows["attention_mask"])
        valid = mask.bool()
        hs = [getattr(m, "base_model", m)(input_ids=ids, attention_mask=mask, output_hidden_states=True
                                          ).hidden_states[1:] for m in (student, teacher)]
        n = torch.stack([(s - t)[valid].double().pow(2).sum() for s, t in zip(*hs, strict=True)])
        d = torch.stack([t[valid].double().pow(2).sum() for t in hs[1]])
        num, den = (n, d) if num is None else (num + n, den + d)
    return [float(x) for x in (num / den).sqrt()]


def per_matrix_rank(n: int, d_model: int, budget: int) -> int:
    """The largest per-matrix rank r whose method-II parameter count (:meth:`PerMatrix.param_count`) fits ``budget``."""
    shape = (n, d_model, d_model)
    smallest = PerMatrix.param_count(shape, 1)
    if smallest > budget:
        raise RankError(f"a budget of {budget:,} weights is below method II's smallest ({smallest:,}, "
                        "rank 1 per matrix); compare the per-matrix peer at a larger Tucker rank")
    r = 1
    while PerMatrix.param_count(shape, r + 1) <= budget:
        r += 1
    return r


def _dense_with(teacher: nn.Module, tensor: torch.Tensor, ops: str) -> nn.Module:
    return unstack_weights(copy.deepcopy(teacher), tensor, ops)


def build(teacher: nn.Module, rank_layer: int, rank_dim: int, init: str, calibration: Calibration,
          ops: str = "san_ffn", fit: BlockwiseFit | None = None, seed: int = 0) -> tuple[nn.Module, torch.Tensor, dict]:
    """The student of one row, its reconstructed (n, D, D) tensor, and what its fit reported."""
    if init in PEERS:
        tensor = stack_weights(teacher, ops)
        n, d_model, _ = tensor.shape
        r = per_matrix_rank(n, d_model, Tucker.param_count(tensor.shape, rank_layer, rank_dim))
        if init == "II":
            u, s, vh = torch.linalg.svd(tensor, full_matrices=False)
            approx = (u[..., :r] * s[:, None, :r]) @ vh[:, :r]
        else:
            approx = whitened_per_matrix(tensor, calibration.grams, r)
        return _dense_with(teacher, approx, ops), approx, {"rank": r, "params": PerMatrix.param_count(tensor.shape, r)}
    student = compress(teacher, rank_layer, rank_dim, ops, init=init, calibration=calibration, fit=fit, seed=seed)
    bank = bank_of(student)
    with torch.no_grad():
        approx = torch.einsum("ip,npq,jq->nij", bank.U, torch.einsum("nl,lpq->npq", bank.P, bank.C), bank.V)
    report = dict(student.tdlib_fit or {})
    report.pop("loss", None)
    if student.tdlib_fit:
        report["final_loss"] = student.tdlib_fit["loss"][-1]
    return student.eval(), approx, report


def measure_init(teacher: nn.Module, rank_layer: int, rank_dim: int, init: str, calibration: Calibration,
                 proxies: Proxies, ops: str = "san_ffn", fit: BlockwiseFit | None = None, seed: int = 0) -> dict:
    """One row of the init table (see the module docstring)."""
    start = time.perf_counter()
    student, approx, report = build(teacher, rank_layer, rank_dim, init, calibration, ops, fit, seed)
    seconds = time.perf_counter() - start
    tensor = stack_weights(teacher, ops)
    weight = float((tensor.double() - approx.double()).norm() / tensor.double().norm())
    return {"config": f"IV-{rank_layer}-{rank_dim}", "init": init, "seconds": seconds,
            "weight_error": weight, "activation_error": activation_error(approx, tensor, calibration.grams),
            "hidden_error": hidden_errors(student, teacher, proxies.heldout), **proxies(student),
            "fit": report}


def fit_options(params: dict) -> dict:
    """The block-wise fit's settings of notebook 07 (data-aware inits), as they enter a run's identity."""
    return {"steps": params["fit_steps"], "lr": params["fit_lr"], "batch_size": params["fit_batch"]}


def curve_spec(params: dict, glue, rank_layer: int, rank_dim: int, init: str) -> TuckerSpec:
    """The general-distillation student of one of notebook 07's recovery curves.

    Only a data-aware init carries the fit's and the calibration's settings: they do not touch the others, and
    without them a zero-map or random student is the very spec (so the same run) as notebook 03's control of
    that init, read back instead of trained twice.
    """

    options = {}
    if init_name(init) in DATA_AWARE:
        options = {"fit": fit_options(params),
                   "calibration": {"sequences": params["calibration_sequences"], "skip": glue.proxy_sequences}}
    spec = TuckerSpec(rank_layer, rank_dim, params["ops"], init, glue.general_objective, **options)
    return spec.renamed(f"{spec.name} init={init}")


def init_experiment(params: dict, workdir: str | os.PathLike, progress: bool = True) -> dict:
    """Notebook 07: the init table (every config x init, before any distillation), then recovery curves of
    general distillation from the data-aware inits, run with the GLUE notebook's settings (``params["glue"]``)
    so that they line up with 03's curves of the paper's init and the zero-map control.

    ``params``: teacher, ops, configs, inits, calibration_sequences, fit_steps, fit_lr, fit_batch,
    curve_configs, curve_inits, seed, glue.
    """

    glue = settings(params["glue"])
    if params["curve_configs"] and not glue.curve_points:
        raise ConfigError("curve_configs asks for recovery curves, but notebook 03's settings record none "
                          "(curve_points: 0); set curve_configs: [] or give 03 curve_points")
    workdir = Path(workdir)
    seed_everything(params["seed"])
    tokenizer = load_tokenizer(params["teacher"])
    teacher = load_model(params["teacher"]).eval()
    start = time.perf_counter()
    calibration = cached_calibration(teacher, tokenizer, workdir / "calibration", params["calibration_sequences"],
                                     ops=params["ops"], skip=glue.proxy_sequences, progress=progress)
    calibration_seconds = time.perf_counter() - start
    proxies = Proxies.for_settings(glue, teacher, tokenizer, progress)
    fit = BlockwiseFit(**fit_options(params), seed=params["seed"])
    rows = []
    grid = [(rl, rd, init) for rl, rd in params["configs"] for init in params["inits"]]
    for rl, rd, init in tqdm(grid, desc="inits", disable=not progress):
        rows.append(measure_init(teacher, rl, rd, init, calibration, proxies, params["ops"], fit, params["seed"]))
    del teacher
    curves, corpus_cache = {}, {}
    for rl, rd in params["curve_configs"]:
        for init in params["curve_inits"]:
            spec = curve_spec(params, glue, rl, rd, init)
            _, info = run_general(glue, spec, tokenizer, workdir, corpus_cache, progress, proxies=proxies)
            curves[spec.name] = {**spec.as_dict(), **info, "milestones": milestones(info["curve"], proxies.teacher)}
    return {"calibration": {"sequences": params["calibration_sequences"], "tokens": calibration.tokens,
                            "max_length": int(calibration.attention_mask.shape[1]), "seconds": calibration_seconds},
            "proxies": {"teacher": proxies.teacher, "heldout_sequences": len(proxies.heldout),
                        "stsb_pairs": len(proxies.gold)},
            "rows": rows, "curves": curves}



def init_record(params: dict, glue: dict, workdir: str | os.PathLike, profile: str, force: bool | None = None,
                extra: dict | None = None) -> dict:
    """The cached record of notebook 07: ``results/07_init/<hash>.json``, its curves run with notebook 03's settings
    ``glue`` (stored in the parameters, so another 03 setting is another record) in 03's runs folder ``workdir``."""
    params = {**params, "glue": glue}
    files = [*proxy_files(), *corpus_files()]
    return cached("07_init", params, lambda: init_experiment(params, workdir), seed=params["seed"],
                  profile=profile, data_files=files, force=force, extra=extra)


def glue_curves(glue: dict) -> dict:
    """The recovery curves of notebook 03's record for the settings ``glue``: its Tucker students (the paper's
    init) and init controls distilled with the same objective, by name; ``path`` says where they came from (None
    when 03 has no such record)."""

    path = locate("03_glue", glue)
    if not path.is_file():
        return {"path": None, "curves": {}}
    result = load_record(path)["result"]
    curves = {n: e for group in ("students", "controls") for n, e in result.get(group, {}).items()
              if e.get("kind", "tucker") == "tucker" and "curve" in e
              and e.get("objective") == glue.get("general_objective", e.get("objective"))}
    return {"path": str(path), "curves": curves}
