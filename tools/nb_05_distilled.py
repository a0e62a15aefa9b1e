"""Source of notebooks/05_distilled.ipynb."""

from nbbuild import build

build("notebooks/05_distilled.ipynb", [
    ("md", """
# 05 · Compressing an already distilled BERT (claim C5)

**C5**: the method is orthogonal to knowledge distillation: it also compresses an already distilled BERT.

The `cpu` profile's teacher, all-MiniLM-L6-v2, *is* a distilled BERT (MiniLM: 6 layers, hidden 384, distilled from
a larger BERT-family model, then tuned for sentence embeddings). So the GLUE experiment of notebook 03 already
compresses a distilled model; with the same parameters this notebook reuses its record (same parameter hash) and
reads it from the C5 angle: how much of the distilled teacher's GLUE score the Tucker students keep, against the
equal-budget dense baselines, and whether a distilled model's weights are less compressible than random ones.
On the `paper` profile the teacher is a distilled checkpoint from the hub and the experiment runs afresh.
"""),
    ("params", """
profile = "cpu"
teacher = "minilm"
tasks = ["cola", "sst2", "mrpc", "stsb", "rte"]
students = [[36, 192], [16, 96]]
baselines = [[1, 384], [1, 144]]
ops = "san_ffn"
pooling = "cls"
max_train_examples = 2000
max_length = 64
batch_size = 16
finetune_steps = 150
finetune_lr = 5e-5
general_steps = 100
general_sequences = 2000
general_max_length = 128
general_lr = 1e-4
stage1_steps = 40
stage2_steps = 60
task_lr = 5e-5
checkpoint_every = 50
seed = 0
"""),
    ("code", """
import pandas as pd
import torch
from tdlib import load_model, stack_weights
from tdlib.decompose import Tucker
from tdlib.experiments import GLUE_DEFAULTS, glue_record
from tdlib.results import cached

params = {k: v for k, v in dict(globals()).items() if k in GLUE_DEFAULTS}  # the parameters cell
# force=False: under FORCE=1 notebook 03 has just recomputed this record; reuse it
record = glue_record(params, profile, force=False)
result = record["result"]
print(record["path"], "(cached: the 03 run)" if record["cached"] else "(computed)")
"""),
    ("code", """
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
"""),
    ("md", """
Is a distilled model harder to compress? Tucker weight error of the teacher's stacked weights at each student's
ranks, against a Gaussian tensor of the same shape (no structure to exploit). Lower than random means the
distilled weights still carry the inter-matrix redundancy that Tucker uses.
"""),
    ("code", """
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
              lambda: compressibility(teacher), seed=seed, profile=profile)
pd.DataFrame(comp["result"]).set_index("ranks").round(4)
"""),
    ("check", """
# stable: ranks and parameter counts of the students of the distilled teacher
for name, s in result["students"].items():
    print(f"{name:22} {s['params']:>10,} weights  {s['ratio']:6.2f}x")
"""),
])
