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
# # 10 · What each doubling of distillation buys: a scaling study for C2, C3 and C6
#
# **Question.** Notebook 03 distils for 0.52M tokens (256 steps of 32 x 64). The paper distils for 2 epochs of
# English Wikipedia (about 2.5B words, some 3B WordPiece tokens, at length 128): on the order of **6 x 10^9
# tokens**, some 11,000 times ours (13.5 doublings). At our budget "falls short" cannot tell a failing method from a
# starved one, nor Tucker from dropping layers. So we measure *rates*: as general-distillation tokens double, does the
# ~1/48 Tucker student's recovery bend toward the teacher, and faster than dense students of its size? Does the
# paper's Tucker init beat zero maps (protocol 1, C6) at any budget?
#
# **Method** (`tdlib.studies.scaling`). Four students of all-MiniLM-L6-v2 at 222,336 encoder weights (~1/48):
# IV-16-96 from the paper's Tucker init, IV-16-96 from zero maps, `dense-1L-144-484` (03's baseline) and
# `dense-2L-96-387` (two layers, TinyBERT's proportions). Each is general-distilled **once**, with 03's objective and
# learning rate, constant after 26 warm-up steps, to 33.5M tokens (about one pass of the corpus), its model kept at
# every doubling from 0.52M. A kept model of a constant-rate run is what a run of that length computes, except for the
# learning-rate decay it never had: the study measures that gap once, at 2.1M tokens, against IV-16-96 trained to that
# length alone with 03's linear decay. At each (student, budget), one record: the zero-shot proxies, and 03's task
# protocol (10 + 160 steps at lr 1e-3, three task seeds) on SST-2 and STS-B (every GLUE task at the first and the last
# budget), scored as % of the fine-tuned teacher and as % of the teacher's gain over the majority class.
#
# **Verdict rules, written before the runs.** The score is the mean over SST-2 and STS-B of % of the teacher; for
# each student a least-squares line against log2(tokens) per task seed gives the slope per doubling and the value
# extrapolated to 6 x 10^9 tokens, each the seed mean with a 95% t-interval across seeds.
# - **C3** (~1/48 keeps 96.7%): *not reached at the paper's budget* when the upper end of IV-16-96's extrapolated
#   interval is below 96.7; *trending toward the claim* when the interval contains it; *reached* when its lower end
#   is at or above it.
# - **Tucker against dense**: *faster* / *slower* when the slope intervals are disjoint, else *level*; both slopes
#   over the budgets both students have measured (`compare_rates`), so a student further along the schedule is
#   not judged on a different stretch of its curve.
# - **C6** (the paper's init against zero maps): at the largest budget measured, the difference of the two IV-16-96
#   students' scores with a 95% Welch interval: *the paper's init ahead* when above 0, *zero maps ahead* when below,
#   else *level*.
# - **C2** (~1/7) is the study's stretch and is not in this plan: its row keeps notebook 03's verdict.
#
# The points take many hours on 2 cores; `python -m tdlib scaling` computes the missing ones, budget by budget, and
# resumes where it stopped. This notebook only reads them (`compute = False`), shows those that exist and names those
# still missing. The study's hosts differ: a student trains with bf16 matmuls where its host has native bf16 and in
# fp32 elsewhere (`precision: auto`); the table names which, and a run resumes only in the precision it began in.

# %% tags=["parameters"]
profile = "cpu"
compute = False
teacher_cache = False
compile_teacher = True
general_sequences = 524288
curve_points = 0
controls = []
first_steps = 256
doublings = 6
warmup_steps = 26
tucker = [16, 96]
inits = ["pretrained", "zero"]
scaling_baselines = [[1, 144], [2, 96]]
scaling_tasks = ["sst2", "stsb"]
decay_check = 2

# %%
from tdlib.paper.reproduce import notebook_parameters

run = notebook_parameters("10_scaling", globals())  # papermill -p strings are coerced; a wrong type stops here
print(run)

# %%
# NBVAL_IGNORE_OUTPUT
# (volatile: which records were read or computed, and where)
import matplotlib.pyplot as plt
import pandas as pd

from tdlib.paper.plots import savefig, scaling_figure
from tdlib.paper.published import PAPER_GENERAL_TOKENS
from tdlib.paper.report import TARGET
from tdlib.paper.reproduce import scaling_params
from tdlib.studies.records import shown
from tdlib.studies.scaling import (
    compare_rates,
    curves,
    difference,
    fit_trend,
    floor_share,
    hours_spent,
    init_verdict,
    points,
    precision_mix,
    reach_verdict,
    run_study,
    seed_scores,
    split_params,
    task_score,
    trained_in,
)

params = scaling_params(run.base_profile, run.params)
if compute:
    run_study(params, run.profile)
found, missing = points(params, run.profile)
s, plan = split_params(params)
print(f"{len(found)} points recorded, {len(missing)} missing")
for r in sorted(found, key=lambda r: (r["result"]["tokens"], r["path"])):
    print(" ", shown(r["path"]))

# %% [markdown]
# ## The points measured, and those still missing

# %%
rows = []
for r in sorted(found, key=lambda r: (r["result"]["tokens"], r["result"]["student"])):
    p = r["result"]
    row = {"student": p["student"] + (" (linear decay)" if p["schedule"] == "linear" else ""),
           "tokens (M)": p["tokens"] / 1e6, "zero-shot STS-B": p["proxies"]["stsb"],
           "embedding cosine": p["proxies"]["cosine"]}
    for task, entry in p["tasks"].items():
        score = task_score(entry["metrics"])
        teacher, floor = task_score(entry["teacher"]), task_score(entry["majority"])
        row[f"{task}"] = score
        row[f"{task} % teacher"] = 100 * score / teacher
        row[f"{task} % gain"] = 100 * (score - floor) / (teacher - floor)
        if "soft_ce" in entry.get("fidelity", {}):
            row[f"{task} soft-CE"] = entry["fidelity"]["soft_ce"]
    row["task hours"] = sum(e["seconds"] for e in p["tasks"].values()) / 3600
    row["trained in"] = trained_in(r)  # bf16 on a host with native bf16, else fp32 (the hours differ with it)
    rows.append(row)
table = pd.DataFrame(rows)
table.round(2) if rows else print("no point measured yet")

# %%
for hours in hours_spent(found):  # per precision: general distillation once per run, teachers once per task
    print(hours)

# %%
print("still missing:" if missing else "every point of the plan is measured")
for m in missing:
    print("  " + m)

# %% [markdown]
# ## Recovery against tokens, and the trends to the paper's budget

# %%
tasks = list(plan.scaling_tasks)
target = TARGET["C3"]
trends, trend_rows = {}, []
for share, label in (("teacher", "% of teacher"), ("gain", "% of the teacher's gain over majority")):
    by_student = curves(found, tasks, share)
    for name, entry in by_student.items():
        if len(entry["tokens"]) < 2:
            continue
        t = fit_trend(entry["tokens"], entry["scores"], PAPER_GENERAL_TOKENS)
        if share == "teacher":
            trends[name] = t
        trend_rows.append({"student": name, "score": label, "budgets": t.budgets, "seeds": t.seeds,
                           "slope / doubling": t.slope, "slope low": t.slope_interval[0],
                           "slope high": t.slope_interval[1], "at 6e9 tokens": t.value,
                           "low": t.value_interval[0], "high": t.value_interval[1]})
pd.DataFrame(trend_rows).round(2) if trend_rows else print("a trend needs two budgets of a student: none yet")

# %%
teacher_curves = curves(found, tasks, "teacher")
if teacher_curves:
    fig = scaling_figure(teacher_curves, trends, floor_share(found, tasks), target, PAPER_GENERAL_TOKENS,
                         f"mean % of teacher over {', '.join(tasks)}")
    savefig(fig, "10_scaling")
    plt.show()

# %% [markdown]
# ## Schedule check: a kept model of the constant-rate run against a run of that length alone

# %%
decayed = [r["result"] for r in found if r["result"]["schedule"] == "linear"]
for d in decayed:
    same = [r["result"] for r in found if r["result"]["schedule"] != "linear"
            and r["result"]["student"] == d["student"] and r["result"]["steps"] == d["steps"]]
    for c in same:
        gap = difference(seed_scores(d, tasks), seed_scores(c, tasks))
        print(f"{d['student']} at {d['tokens'] / 1e6:.1f}M tokens: linear decay minus constant = {gap[0]:+.2f} points "
              f"of the teacher (95% interval {gap[1][0]:+.2f} to {gap[1][1]:+.2f}); zero-shot STS-B "
              f"{d['proxies']['stsb']:.1f} vs {c['proxies']['stsb']:.1f}")
if not decayed:
    print("the schedule check's point is not measured yet")

# %% [markdown]
# ## Verdict

# %%
lines = []
tucker_name = f"IV-{plan.tucker[0]}-{plan.tucker[1]}"
if tucker_name in trends:
    t = trends[tucker_name]
    lines.append(f"C3: IV-16-96 extrapolates to {t.value:.1f}% of the teacher at the paper's ~6e9 tokens "
                 f"(95% {t.value_interval[0]:.1f} to {t.value_interval[1]:.1f}, {t.slope:+.2f} points per doubling, "
                 f"{t.budgets} budgets): {reach_verdict(t, target)}.")
    for name, entry in teacher_curves.items():
        if name.startswith("dense") and name in trends:
            verdict, ours, theirs = compare_rates(teacher_curves[tucker_name], entry, PAPER_GENERAL_TOKENS)
            mix = precision_mix({tucker_name: teacher_curves[tucker_name], name: entry})
            lines.append(f"Tucker against {name}: {verdict} ({ours.slope:+.2f} vs {theirs.slope:+.2f} points per "
                         f"doubling over the {ours.budgets} budgets both measured{'; ' + mix if mix else ''}).")
zero = f"{tucker_name} init=zero"
if tucker_name in teacher_curves and zero in teacher_curves:
    a, b = teacher_curves[tucker_name], teacher_curves[zero]
    common = sorted(set(a["tokens"]) & set(b["tokens"]))
    if common:
        last = common[-1]
        d, interval = difference(a["scores"][a["tokens"].index(last)], b["scores"][b["tokens"].index(last)])
        mix = precision_mix({tucker_name: a, zero: b}, [last])
        lines.append(f"C6: at {last / 1e6:.1f}M tokens the paper's init minus zero maps = {d:+.2f} points "
                     f"(95% {interval[0]:+.2f} to {interval[1]:+.2f}{'; ' + mix if mix else ''}): "
                     f"{init_verdict(interval)}.")
print("\n".join(lines) if lines else f"no verdict yet: {len(missing)} points missing")
