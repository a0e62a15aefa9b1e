"""C5 where the teacher's users measure it: each student of notebook 03 exported to sentence-transformers, its
zero-shot STS-B by sentence-transformers' own evaluator beside tdlib's proxy, and its ``encode`` throughput.

The students are notebook 03's general-distilled encoders (the same runs, read back from the profile's runs folder,
or trained again to the same key when the folder lacks them); each is exported with
:func:`tdlib.core.export.export_sentence_transformers` (the teacher's pooling and normalisation), then scored by
:func:`tdlib.distill.proxies.st_stsb` on the STS-B dev set (all of it unless the settings' ``proxy_pairs`` says
fewer). Throughput: sentences per second of ``SentenceTransformer.encode`` on a fixed set of STS-B dev sentences at
a fixed thread count, every model timed in turn in each of ``rounds`` rounds (interleaved, so a slow spell of the
host hits every model alike), by ``torch.utils.benchmark``; the table gives each model's median over rounds and the
range.
"""

from __future__ import annotations

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from torch.utils import benchmark
from tqdm import tqdm

from tdlib.core.errors import ConfigError
from tdlib.core.export import export_sentence_transformers
from tdlib.core.memory import retain_freed_memory
from tdlib.core.pretrained import load_model, load_tokenizer, resolve
from tdlib.data.glue import load_task, task_files
from tdlib.distill.proxies import Proxies, st_stsb
from tdlib.studies.records import cached, runs_dir
from tdlib.studies.runs import run_general, student_specs
from tdlib.studies.settings import keyed, settings


def encode_rate(models: dict[str, SentenceTransformer], sentences: list[str], threads: int = 2,
                batch_size: int = 32, rounds: int = 5, min_run_time: float = 1.0,
                progress: bool = True) -> dict[str, dict]:
    """Sentences per second of ``encode`` for each model: median and range over ``rounds`` interleaved rounds."""
    torch.set_num_threads(threads)
    retain_freed_memory()
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():  # warm-up
        model.encode(sentences[:batch_size], batch_size=batch_size)
    for _ in tqdm(range(rounds), desc="encode rounds", disable=not progress):
        for name, model in models.items():
            timer = benchmark.Timer("model.encode(sentences, batch_size=batch)", num_threads=threads,
                                    globals={"model": model, "sentences": sentences, "batch": batch_size})
            times[name].append(timer.blocked_autorange(min_run_time=min_run_time).median)
    out = {}
    for name, ts in times.items():
        rates = len(sentences) / np.asarray(ts)
        out[name] = {"sentences_per_s": float(np.median(rates)), "low": float(rates.min()), "high": float(rates.max()),
                     "rounds": rounds}
    return out


SIZES = ("sentences", "rounds", "min_run_time")  # what a quick run may shrink (notebook 05's encode_sizes)


def encode_study(params: dict, profile: str, sentences: int = 512, threads: int = 2, rounds: int = 5,
                 min_run_time: float = 1.0, progress: bool = True) -> dict:
    """The teacher and every student of notebook 03's ``params``: STS-B by the proxy and by sentence-transformers'
    evaluator (both on the settings' ``proxy_pairs``: the first dev pairs, or all), and ``encode`` throughput
    (``sentences`` timed in ``rounds`` interleaved rounds of at least ``min_run_time`` seconds)."""
    s = settings(keyed(params))
    workdir = runs_dir(profile)
    tokenizer = load_tokenizer(s.teacher)
    teacher = load_model(s.teacher).eval()
    curves = Proxies.for_settings(s, teacher, tokenizer, progress) if s.curve_points else None  # 03's run keys
    # as sentence-transformers computes: fp32, sentences whole (its max_seq_length for MiniLM is 256; 03's proxies cut
    # at the general-distillation length)
    fp32 = Proxies.from_data(teacher, tokenizer, sequences=s.proxy_sequences, max_length=256, precision="fp32",
                             progress=progress, pairs=s.proxy_pairs)
    st_models = {"teacher": SentenceTransformer(str(resolve(s.teacher)), device="cpu")}
    rows = {"teacher": {"kind": "teacher", "proxy_stsb": fp32.teacher["stsb"]}}
    corpus_cache: dict = {}
    for spec in student_specs(s, teacher):
        encoder_dir, info = run_general(s, spec, tokenizer, workdir, corpus_cache, progress, proxies=curves)
        out = workdir / "sentence-transformers" / encoder_dir.parent.name
        export_sentence_transformers(encoder_dir, out, s.teacher, overwrite=True)
        st_models[spec.name] = SentenceTransformer(str(out), device="cpu")
        rows[spec.name] = {"kind": spec.kind, "params": info["params"],
                           "proxy_stsb": fp32(load_model(encoder_dir))["stsb"]}
    for name, model in st_models.items():
        rows[name]["st_stsb"] = st_stsb(model, max_pairs=s.proxy_pairs)
    dev = load_task("stsb", "dev")
    texts = list(dev["text_a"])[:sentences]
    rates = encode_rate(st_models, texts, threads, rounds=rounds, min_run_time=min_run_time, progress=progress)
    for name in rows:
        rows[name].update(rates[name])
    return {"models": rows, "sentences": len(texts), "threads": threads, "batch_size": 32}


def encode_record(params: dict, profile: str, extra: dict | None = None, **kwargs) -> dict:
    """The cached :func:`encode_study` of notebook 05: ``results/05_encode/<hash>.json``. ``kwargs``: sizes other
    than :func:`encode_study`'s defaults (:data:`SIZES`, ``threads``); they join the record's key."""
    unknown = sorted(set(kwargs) - {*SIZES, "threads"})
    if unknown:
        raise ConfigError(f"encode sizes {unknown} are unknown; choose among {[*SIZES, 'threads']}")
    key = {"glue": keyed(params), **kwargs}
    return cached("05_encode", key, lambda: encode_study(params, profile, **kwargs), seed=params.get("seed", 0),
                  profile=profile, data_files=task_files("stsb"), extra=extra)
