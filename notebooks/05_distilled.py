# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: tdlib (.venv)
#     language: python
#     name: tdlib
# ---

# %% [markdown]
# # 05 · Compressing an already distilled BERT (claim C5)
#
# **C5**: the method is orthogonal to knowledge distillation: it also compresses an already distilled BERT.
#
# The `cpu` profile's teacher, all-MiniLM-L6-v2, *is* a distilled BERT (MiniLM: 6 layers, hidden 384, distilled from
# a larger BERT-family model, then tuned for sentence embeddings). So the GLUE experiment of notebook 03 already
# compresses a distilled model; with the same parameters this notebook reuses its record (same parameter hash) and
# reads it from the C5 angle: how much of the distilled teacher's GLUE score the Tucker students keep, against the
# equal-budget dense baselines, and whether a distilled model's weights are less compressible than random ones.
# On the `paper` profile the teacher is a distilled checkpoint from the hub and the experiment runs afresh.

# %% tags=["parameters"]
profile = "cpu"
teacher = "minilm"
tasks = ["cola", "sst2", "mrpc", "stsb", "rte"]
students = [[36, 192], [16, 96]]
baselines = [[1, 384], [1, 144]]
ops = "san_ffn"
pooling = {"cola": "mean", "sst2": "mean", "mrpc": "mean", "stsb": "cosine", "rte": "mean"}
max_train_examples = None  # per task; None: all
max_length = 128
batch_size = 32
finetune_epochs = {"cola": 8, "sst2": 1, "mrpc": 4, "stsb": 3, "rte": 10}
finetune_steps = None  # steps instead of epochs (a number or {task: n})
finetune_lr = {"cola": 3.0e-5, "sst2": 1.0e-4, "mrpc": 1.0e-4, "stsb": 1.0e-4, "rte": 2.0e-5}  # per task
finetune_head_lr = {"mrpc": 1.0e-3}  # the task head's lr in teacher fine-tuning, per task (None: finetune_lr)
general_steps = 256
general_sequences = 8192
general_max_length = 64
general_lr = 0.001
general_objective = "all_layers_cos"
stage1_steps = 10
stage2_steps = 160
task_curve = [0, 20, 40, 80, 160]  # stage-2 steps with dev metrics (None: the end only)
task_lr = 0.001
task_seeds = [0, 1, 2]  # task distillation once per seed; the tables give the mean (None: once)
checkpoint_every = 100
seed = 0
precision = "auto"
distill_dropout = False
train_word_embeddings = False
teacher_cache = True
curve_points = 5
proxy_sequences = 256
proxy_pairs = None  # STS-B dev pairs the proxies score (None: all)
controls = [{"objective": "last_layer"}, {"init": "zero"}]
encode_sizes = None  # the deploy table's encode timing: None is 512 sentences in 5 rounds of 1 s or more


# %%
from tdlib.paper.reproduce import notebook_parameters
from tdlib.studies.records import describe

run = notebook_parameters("05_distilled", globals())  # papermill -p strings are coerced; a wrong type stops here
print(run)

# %%
# NBVAL_IGNORE_OUTPUT
# (volatile: which records were read or computed, and where)
import pandas as pd
import torch

from tdlib import load_model, stack_weights
from tdlib.core.decompose import Tucker
from tdlib.studies.experiments import glue_record
from tdlib.studies.records import cached
from tdlib.studies.settings import GLUE_DEFAULTS

params = {k: v for k, v in run.params.items() if k in GLUE_DEFAULTS}
# force=False: under FORCE=1 notebook 03 has just recomputed this record; reuse it
record = glue_record(params, run.profile, force=False, extra=run.provenance())
result = record["result"]
print(describe(record), "(the 03 run)" if record["cached"] else "")

# %%
summary = result["summary"]
rows = []
for name, s in result["students"].items():
    rows.append({"student": name, "kind": s["kind"], "encoder weights": s["params"], "compression": s["ratio"],
                 "% of distilled teacher (GLUE avg)": summary[name]["percent_of_teacher"],
                 # a task where the teacher scores 0 (e.g. CoLA MCC at a tiny budget) has no ratio
                 **{t: 100 * r["students"][name]["metrics"]["score"] / r["metrics"]["score"]
                    if r["metrics"]["score"] else float("nan") for t, r in result["tasks"].items()}})
retained = pd.DataFrame(rows).set_index("student")
retained.round(2)


# %% [markdown]
# **C5 in the teacher's native form.** all-MiniLM-L6-v2 is a sentence-embedding model. Zero-shot STS-B dev
# Spearman of the cosine of mean-pooled embeddings, with no task training: the teacher, and each student and
# baseline after general distillation (from the same 03 record; the curves are in notebook 03).

# %%
tz = result["proxies"]["teacher"]["stsb"]
zero_shot = [{"model": "teacher", "kind": "dense", "STS-B zero-shot": tz, "% of teacher": 100.0}]
for name, s in result["students"].items():
    zero_shot.append({"model": name, "kind": s["kind"], "STS-B zero-shot": s["curve"][-1]["stsb"],
                      "% of teacher": 100 * s["curve"][-1]["stsb"] / tz,
                      "embedding cosine": s["curve"][-1]["cosine"], "compression": s["ratio"]})
pd.DataFrame(zero_shot).set_index("model").round(2)

# %% [markdown]
# **C5 through sentence-transformers**, as the teacher's users measure it. Each student above, exported with
# `tdlib.export_sentence_transformers` (the teacher's mean pooling and normalisation; `python -m tdlib export`), loaded
# by `SentenceTransformer(dir)` and scored by sentence-transformers' own `EmbeddingSimilarityEvaluator` on the whole
# STS-B dev set, beside tdlib's zero-shot proxy on the same encoder (fp32, whole sentences); and `encode`
# throughput on 512 STS-B dev sentences, 2 threads, batch 32, every model timed in turn in each of 5 rounds
# (median and range over rounds).

# %%
# NBVAL_IGNORE_OUTPUT
# (volatile: which records were read or computed, and where)
from tdlib.studies.encode import encode_record

encode = encode_record(params, run.profile, extra=run.provenance(), **(encode_sizes or {}))
print(describe(encode))

# %%
teacher_rate = encode["result"]["models"]["teacher"]["sentences_per_s"]
deploy = pd.DataFrame([{"model": name, "STS-B (sentence-transformers evaluator)": m["st_stsb"],
                        "STS-B (tdlib proxy, fp32)": m["proxy_stsb"],
                        "% of teacher": 100 * m["st_stsb"] / encode["result"]["models"]["teacher"]["st_stsb"],
                        "sentences/s": m["sentences_per_s"], "low": m["low"], "high": m["high"],
                        "x teacher": m["sentences_per_s"] / teacher_rate}
                       for name, m in encode["result"]["models"].items()]).set_index("model")
deploy.round(2)

# %% [markdown]
# Is a distilled model harder to compress? Tucker weight error of the teacher's stacked weights at each student's
# ranks, against a Gaussian tensor of the same shape (no structure to exploit). Lower than random means the
# distilled weights still carry the inter-matrix redundancy that Tucker uses.

# %%
# NBVAL_IGNORE_OUTPUT
# (volatile: which records were read or computed, and where)
def compressibility(teacher_name):
    weights = stack_weights(load_model(teacher_name), ops)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(weights.shape, generator=gen) * weights.std()
    out = []
    for rl, rd in students:
        out.append({"ranks": f"IV-{rl}-{rd}",
                    "teacher weight error": Tucker(rl, rd, seed=seed).fit(weights).relative_error(weights),
                    "random weight error": Tucker(rl, rd, seed=seed).fit(noise).relative_error(noise)})
    return out

comp = cached("05_compressibility", {"teacher": teacher, "ops": ops, "students": students, "seed": seed},
              lambda: compressibility(teacher), seed=seed, **run.record_kwargs())

# %%
pd.DataFrame(comp["result"]).set_index("ranks").round(4)

# %%
# NBVAL_CHECK_OUTPUT
# stable: ranks and parameter counts of the students of the distilled teacher
for name, s in result["students"].items():
    print(f"{name:22} {s['params']:>10,} weights  {s['ratio']:6.2f}x")


# %% [markdown]
# ## Verdict
# The claims table's row, computed from the records this notebook read; the rules behind each verdict are under the
# README's table (notebook 06).

# %%
from IPython.display import Markdown

from tdlib.paper.claims import verdict_text

Markdown(verdict_text("C5"))
