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
# # Appendix A (to 03) · The teacher: how far does fine-tuning go on this budget?
#
# Every GLUE claim (C2, C3, C5) is a percentage *of the teacher*, so an under-trained teacher makes every student
# look better or worse than it is. Notebook 03 first fine-tuned all-MiniLM-L6-v2 briefly (2-3 epochs; SST-2 on an
# 8,000-example subsample; GLUE average 68.8), below published MiniLM-L6 numbers; the cpu profile's 03 now takes
# the best recipe measured here, its runs read back. This notebook fine-tunes the teacher alone with other recipes,
# and records the **dev score at the end of every epoch**: a task whose curve still climbs at the end wants more
# epochs, one that has flattened does not.
#
# Read the curves with one caveat: the learning rate decays linearly to zero over the whole run, so the score
# after epoch k of an N-epoch run is not what a k-epoch run would score (that run ends at a lower learning rate).
#
# The runs are hashed like notebook 03's teacher runs (same settings, same runs folder): a task whose recipe here
# equals 03's is 03's own run, read back, and if 03 adopts a recipe measured here, it reuses these runs. The task
# heads are 03's (STS-B: the cosine of the two sentences' embeddings). The cpu profile tries one recipe per task
# where an earlier record of this notebook left room, and reads 03's for the rest. Training the task head (pooler
# and classifier) at lr 1e-3 beside the encoder's lr was measured for CoLA, MRPC and RTE (at the encoder's lr
# the fresh head learnt slowly: CoLA's dev MCC was 5.9 after its first epoch); it helped MRPC alone. Each task's
# best recipe so far (by dev score, as GLUE recipes are chosen) gave GLUE average 70.0; longer runs then gave 71.0:
# CoLA at lr 3e-5 for 8 epochs (33.1; 5e-5 for 5 gave 30.4, and 2e-5 for 8 gave 31.0 in a later record), MRPC with
# its head at 1e-3 for 4 epochs, RTE at lr 2e-5 for 10 epochs. The profile keeps that best recipe, so this record is
# the 71.0 one, read back. The recipes measured before are tabled below from their own records, so a cold
# reproduce does not pay for them again. Every recipe ran at one seed; this one is re-run at two more seeds on every
# task (`extra_seeds`), to say how far one seed's score, which the claims cite, is from the recipe's mean.

# %% tags=["parameters"]
profile = "cpu"
teacher = "minilm"
tasks = ["cola", "sst2", "mrpc", "stsb", "rte"]
pooling = {"cola": "mean", "sst2": "mean", "mrpc": "mean", "stsb": "cosine", "rte": "mean"}  # 03's task heads
max_train_examples = None  # every task's full training set
max_length = 128
batch_size = 32
finetune_epochs = {"cola": 8, "sst2": 1, "mrpc": 4, "stsb": 3, "rte": 10}
finetune_steps = None  # steps instead of epochs (a number or {task: n})
finetune_lr = {"cola": 3.0e-5, "sst2": 1.0e-4, "mrpc": 1.0e-4, "stsb": 1.0e-4, "rte": 2.0e-5}  # per task
# the head's own lr (pooler and classifier) per task; a task it omits trains its head at finetune_lr
finetune_head_lr = {"mrpc": 1.0e-3}
checkpoint_every = 100
seed = 0
precision = "auto"
# the same recipe re-run at other seeds on some tasks, {task: [seed, ...]} (one record per seed); None: none
extra_seeds = {"cola": [1, 2], "sst2": [1, 2], "mrpc": [1, 2], "stsb": [1, 2], "rte": [1, 2]}

# %%
from tdlib.paper.reproduce import notebook_parameters
from tdlib.studies.records import describe, shown

run = notebook_parameters("08_teacher", globals())  # papermill -p strings are coerced; a wrong type stops here
print(run)

# %%
# NBVAL_IGNORE_OUTPUT
# (volatile: which records were read or computed, and where)
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from tdlib.paper.plots import savefig
from tdlib.paper.published import MINILM_L6_H384_DEV, MINILM_L6_H384_SOURCE
from tdlib.paper.report import seed_mean_glue, seed_spread
from tdlib.studies.experiments import teacher_record, teacher_seed_records
from tdlib.studies.records import records
from tdlib.studies.runs import per_task
from tdlib.studies.settings import GLUE_DEFAULTS

params = {k: v for k, v in run.params.items() if k in GLUE_DEFAULTS}
record = teacher_record(params, run.profile, extra=run.provenance())
result = record["result"]
print(describe(record))
seed_records = teacher_seed_records(params, extra_seeds, run.profile, extra=run.provenance())
for s, rec in seed_records.items():
    print(f"seed {s} ({', '.join(rec['result']['tasks'])}):", describe(rec))

# every teacher notebook 03 has recorded for this teacher and these tasks (read, not recomputed), oldest first:
# the recipes measured so far, each with the commit its record was computed at
glue_runs = [r for r in reversed(records("03_glue")) if r["params"].get("teacher") == teacher
             and set(r["result"]["tasks"]) == set(result["tasks"])]
for r in glue_runs:
    print(f"notebook 03 at {r['provenance']['git']['sha'][:7]}: {shown(r['path'])}")

# %% [markdown]
# ## The teacher per task
# Dev scores x 100 (CoLA MCC, SST-2/RTE accuracy, MRPC mean of F1 and accuracy, STS-B mean of Pearson and
# Spearman) of this recipe, beside every teacher notebook 03 has recorded (its recipe: epochs on n_train examples)
# and the published MiniLM-L6-H384 dev scores. A notebook-03 teacher with this recipe is these very runs. The
# issue's target for this profile: GLUE average >= 72, CoLA MCC >= 35, SST-2 >= 88, STS-B >= 85.

# %%
def epochs(entry: dict) -> float:
    """Epochs of a teacher run (records made before runs kept their epochs: from steps, batch and n_train)."""
    return entry.get("epochs") or entry["steps"] / max(1, entry["n_train"] // batch_size)


def recipe(rec: dict, task: str) -> str:
    """One task's recipe in a teacher record: epochs x examples, learning rate and head (and its own lr)."""
    entry, p = rec["result"]["tasks"][task], rec["params"]
    lr, head_lr = per_task(p.get("finetune_lr"), task), per_task(p.get("finetune_head_lr"), task)
    return (f"{epochs(entry):.1f} ep x {entry['n_train']:,}, lr {lr:g}, "
            f"{per_task(p.get('pooling', 'cls'), task)} head" + (f" at lr {head_lr:g}" if head_lr else ""))


rows = []
for task, r in result["tasks"].items():
    row = {"task": task, "n_train": r["n_train"], "epochs": r["epochs"], "minutes": r["seconds"] / 60,
           "dev by epoch": " ".join(f"{100 * p['score']:.1f}" for p in r["curve"]),
           "this recipe": 100 * r["metrics"]["score"]}
    for g in glue_runs:
        ref = g["result"]["tasks"][task]
        sha = g["provenance"]["git"]["sha"][:7]
        row[f"03 @ {sha}"] = 100 * ref["metrics"]["score"]
        row[f"03 @ {sha}: recipe"] = recipe(g, task)
    row.update({"published MiniLM-L6-H384": MINILM_L6_H384_DEV.get(task),
                "majority class": 100 * r["majority"]["score"]})
    rows.append(row)
table = pd.DataFrame(rows).set_index("task")
averages = {"this recipe": result["glue"], "majority class": result["majority_glue"],
            **{f"03 @ {g['provenance']['git']['sha'][:7]}": g["result"]["summary"]["teacher"]["glue"]
               for g in glue_runs}}
print(MINILM_L6_H384_SOURCE)
print("GLUE average over these tasks:", ", ".join(f"{k} {100 * v:.1f}" for k, v in averages.items()))
table.round(1)

# %%
targets = {"GLUE average": (100 * result["glue"], 72.0), "CoLA MCC": (None, 35.0), "SST-2": (None, 88.0),
           "STS-B": (None, 85.0)}
for name, task in (("CoLA MCC", "cola"), ("SST-2", "sst2"), ("STS-B", "stsb")):
    if task in result["tasks"]:
        targets[name] = (100 * result["tasks"][task]["metrics"]["score"], targets[name][1])
pd.DataFrame([{"target": k, "measured": v, "needed": t, "met": None if v is None else v >= t}
              for k, (v, t) in targets.items()]).set_index("target").round(1)

# %% [markdown]
# ## How far is one seed from the recipe?
# Every recipe above ran at one seed, and the claims cite that seed's GLUE average. The tasks listed in
# `extra_seeds` are re-run with this recipe at other seeds (everything else equal: the head's initialisation, the
# batch order and dropout change). Per task: dev score x 100 at each seed (this record's first), and their mean,
# range and sample standard deviation; then the GLUE average with those tasks at their seed mean. A difference
# between two recipes that is smaller than a task's range here is not evidence that one recipe is better.

# %%
spread = seed_spread(record, seed_records)
if spread:
    display(pd.DataFrame([{"task": r["task"], **{f"seed {s}": v for s, v in zip(r["seeds"], r["scores"], strict=True)},
                           "mean": r["mean"], "min": r["min"], "max": r["max"], "std": r["std"]}
                          for r in spread]).set_index("task").round(1))
    print(f"GLUE average: {100 * result['glue']:.1f} at seed {seed}; {100 * seed_mean_glue(record, spread):.1f} with "
          + ", ".join(f"{r['task']}" for r in spread) + " at their mean over the seeds above; each seed's own: "
          + ", ".join(f"seed {s} {100 * rec['result']['glue']:.1f}" for s, rec in seed_records.items()
                      if set(rec["result"]["tasks"]) == set(result["tasks"])))
else:
    print("no task re-run at other seeds (extra_seeds is None)")

# %% [markdown]
# **Did the longer recipe pay?** Per task: this recipe's gain over each notebook-03 teacher, and how much the dev
# score moved over the last epoch of this run (at the end of a linear decay, a curve that still climbs says more
# epochs may pay; a flat or falling one says the recipe, not the budget, sets the level).

# %%
verdict = []
for task, r in result["tasks"].items():
    scores = [100 * p["score"] for p in r["curve"] if p["step"] % r["steps_per_epoch"] == 0]
    last = scores[-1] - scores[-2] if len(scores) >= 2 else None
    row = {"task": task, "this recipe": 100 * r["metrics"]["score"],
           "best epoch end": max(scores) if scores else None, "last epoch's change": last,
           "trend": None if last is None else "climbing" if last > 0.5 else "flat or falling"}
    for g in glue_runs:
        row[f"gain over 03 @ {g['provenance']['git']['sha'][:7]}"] = (
            100 * (r["metrics"]["score"] - g["result"]["tasks"][task]["metrics"]["score"]))
    verdict.append(row)
pd.DataFrame(verdict).set_index("task").round(1)

# %% [markdown]
# **Every recipe this notebook has recorded** for this teacher, oldest first (each record read, not recomputed;
# the current one included): per task, its dev score and recipe (epochs x training examples, learning rate,
# head). A recipe that shows no gain here is why the profile does not run it again.

# %%
# (the seed re-runs are in the table above, not here)
teacher_runs = [r for r in reversed(records("08_teacher")) if r["params"].get("teacher") == teacher
                and r["params"].get("seed", 0) == seed]
history = []
for rec in teacher_runs:
    row = {"record": f"08 @ {rec['provenance']['git']['sha'][:7]}", "GLUE avg": 100 * rec["result"]["glue"]}
    for task in rec["result"]["tasks"]:
        row[task] = 100 * rec["result"]["tasks"][task]["metrics"]["score"]
        row[f"{task}: recipe"] = recipe(rec, task)
    history.append(row)
pd.DataFrame(history).set_index("record").round(1)

# %% [markdown]
# ## Dev score by epoch
# Each task's dev score at the end of every epoch of this recipe (solid), each teacher notebook 03 has recorded at
# the end of its run (black markers), the published MiniLM-L6-H384 score (dashed) and the majority-class floor
# (dotted).

# %%
fig, axes = plt.subplots(1, len(result["tasks"]), figsize=(3.4 * len(result["tasks"]), 3.2), squeeze=False)
for ax, (task, r) in zip(axes[0], result["tasks"].items(), strict=True):
    ax.plot([p["step"] / r["steps_per_epoch"] for p in r["curve"]], [100 * p["score"] for p in r["curve"]],
            "o-", label="this recipe")
    for g, marker in zip(glue_runs, "xP*^v", strict=False):
        ref = g["result"]["tasks"][task]
        ax.plot([epochs(ref)], [100 * ref["metrics"]["score"]], marker, c="k", ms=9,
                label=f"03 @ {g['provenance']['git']['sha'][:7]}")
    if task in MINILM_L6_H384_DEV:
        ax.axhline(MINILM_L6_H384_DEV[task], ls="--", c="gray", label="published")
    ax.axhline(100 * r["majority"]["score"], ls=":", c="gray", label="majority class")
    ax.set_title(f"{task} ({r['n_train']:,} train)")
    ax.set_xlabel("epochs")
axes[0][0].set_ylabel("dev score x 100")
axes[0][0].legend(fontsize=7)
fig.suptitle(f"{teacher} fine-tuned per task (lr: " + ", ".join(
    f"{t} {per_task(finetune_lr, t):g}" + (f", head {per_task(finetune_head_lr, t):g}"
                                           if per_task(finetune_head_lr, t) else "") for t in result["tasks"])
             + f"), batch {batch_size} (profile {run.profile})")
fig.tight_layout()
savefig(fig, "08_teacher_curves")
plt.show()
