"""The front page's claims table: one row per claim, one number with its budget, a verdict from a fixed vocabulary.

Every cell comes from the records (``results/<notebook>/*.json``) and is at most :data:`MAX_CELL` characters. Each
row's verdict follows :data:`VERDICTS`, rules written before the runs that decide them. Notebook 06 writes the table
into the README between two markers; the long form of each row is its notebook and :func:`tdlib.paper.report.claims`.
"""

from __future__ import annotations

import re

from tdlib.data.glue import get_task, task_scores
from tdlib.paper.published import PAPER_GENERAL_TOKENS
from tdlib.paper.report import (
    C4_TARGET,
    PAPER,
    TARGET,
    bert_base_records,
    c4_verdict,
    method_ranking,
    speed_interval,
    student_near,
    tiny_speed,
)
from tdlib.studies.records import records
from tdlib.studies.scaling import NAME as SCALING
from tdlib.studies.scaling import curves, difference, fit_trend, reach_verdict

MAX_CELL = 200
# the paper's own targets: % of the teacher's GLUE average (C2 "on par", C3), the speed-up (C4), C3's weight cap
TARGETS = {**TARGET, "C4": C4_TARGET}
C3_MAX_WEIGHTS = 2_000_000  # on BERT-base; a profile with another teacher keeps the ratio (1/48), not the count
VERDICTS = {
    "reproduced": "meets the paper's target",
    "not reproduced": "misses the target in a measurement our budget does not limit (weight error, rankings under "
                      "identical distillation, speed, inits under equal distillation)",
    "short at our budget": "misses the target where the distillation budget decides, and ours is a small fraction of "
                           "the paper's: a starved student and a failing method look alike",
    "not reached at the paper's budget": "the scaling study's trend, extrapolated to the paper's ~6e9 tokens, stays "
                                         "below the target with its whole 95% interval (notebook 10)",
    "trending toward the claim": "the scaling study's extrapolated 95% interval contains the target (notebook 10)",
    "within noise of the target": "the speed-up's 95% interval over fresh processes contains the target (C4)",
    "mixed": "one part of the claim reproduced, another not",
    "pending": "no record yet",
}
NOTEBOOKS = {"C1": ["02_methods"], "C2": ["03_glue"], "C3": ["03_glue", "10_scaling"], "C4": ["04_speed"],
             "C5": ["05_distilled", "03_glue"], "C6": ["07_init", "04_speed", "10_scaling"]}
SAME = 1.0  # points of zero-shot STS-B within which two inits after the same distillation count as level


def gain_share(result: dict, name: str) -> float:
    """A student's share (%) of the teacher's gain over the majority class, on the GLUE average.

    Per GLUE column, a score below the majority class counts as the majority class: a student gains nothing there,
    and never less than nothing. Why: on tasks where every student predicts the majority class, "% of the teacher"
    is mostly the floor (the majority class alone keeps half of the teacher's average here); this measure is 0 for
    a student that learnt nothing and 100 for one that matches the teacher.
    """
    teacher = student = floor = 0.0
    for task, entry in result["tasks"].items():
        t_cols, m_cols = task_scores(task, entry["metrics"]), task_scores(task, entry["majority"])
        s_cols = task_scores(task, entry["students"][name]["metrics"])
        teacher += sum(t_cols.values())
        floor += sum(m_cols.values())
        student += sum(max(s_cols[c], m_cols[c]) for c in s_cols)
    return 100.0 * (student - floor) / (teacher - floor)


def general_tokens(result: dict, name: str) -> int:
    """Tokens of general distillation behind a student (steps x batch x length, as the record counts them)."""
    return int(result["students"][name].get("tokens", 0))


def budget_sentence(root=None) -> str:
    """One paragraph on what the committed budget can tell: our general-distillation tokens against the paper's."""
    rec = _newest("03_glue", root)
    if rec is None:
        return "The GLUE claims have no record yet (notebook 03)."
    res = rec["result"]
    name = next(n for n, s in res["students"].items() if s["kind"] == "tucker")
    ours = general_tokens(res, name)
    floor = res["summary"]["majority class"]["percent_of_teacher"]
    return (f"**What 2 cores can tell.** Each student here is general-distilled on {ours / 1e6:.2f}M tokens; the "
            f"paper's recipe reads about {PAPER_GENERAL_TOKENS / 1e9:.0f}B (2 epochs of English Wikipedia), "
            f"{PAPER_GENERAL_TOKENS / ours:,.0f} times more. At this budget the GLUE rows tell whether a compressed "
            f"student learns the teacher's tasks at all (the majority class alone keeps {floor:.1f}% of the "
            "teacher's average, so the gain over it is given too) and how it compares with an equal-budget dense "
            "student; they cannot tell whether it would reach the paper's level. Weight error, speed and the "
            "rankings under identical distillation do not depend on that budget.")


def departures(root=None) -> str:
    """Where the committed profile departs from the paper's recipe, as a markdown table read from notebook 03's
    record (its settings and what it measured): what, the paper's, ours, why, and the notebook with the evidence."""
    rec = _newest("03_glue", root)
    if rec is None:
        return "No GLUE record yet (notebook 03)."
    p, res = rec["params"], rec["result"]
    name = next(n for n, s in res["students"].items() if s["kind"] == "tucker")
    stage = next(iter(res["tasks"].values()))["students"][name]["steps"]
    pooling = p.get("pooling", "cls")
    heads = ", ".join(sorted({f"{v} ({k})" if v == "cosine" else v for k, v in pooling.items()})) \
        if isinstance(pooling, dict) else pooling
    seeds = len(p.get("task_seeds") or [0])
    rows_ = [
        ("teacher", "bert-base-uncased (12 layers, 768)", f"{p['teacher']}: all-MiniLM-L6-v2 (6 layers, 384), itself "
         "distilled", "runs offline on 2 cores; C5 is this case", "08_teacher"),
        ("tasks", "8 GLUE tasks", ", ".join(res["tasks"]) + " (dev)", "the tasks with train and dev data here",
         "03_glue"),
        ("general distillation", f"~{PAPER_GENERAL_TOKENS / 1e9:.0f}B tokens, last-layer attention + hidden MSE",
         f"{general_tokens(res, name) / 1e6:.2f}M tokens, {p.get('general_objective')}",
         "2 cores; at this budget the last-layer loss falls while embeddings stall (its run is a control)",
         "03_glue"),
        ("task distillation", "3-30 epochs a stage, lr 5e-5, one seed",
         f"{stage[0]} + {stage[1]} steps, lr {p.get('task_lr'):g}, {seeds} seeds",
         "budget; the higher lr moves factors that start far from the teacher", "03_glue"),
        ("task heads", "[CLS] pooler; STS-B cross-encoder", heads,
         "the teacher is a sentence encoder read by mean pooling", "03_glue"),
        ("training step", "fp32, dropout, every parameter",
         f"precision {p.get('precision')}, dropout {'on' if p.get('distill_dropout') else 'off'}, word embeddings "
         f"{'trained' if p.get('train_word_embeddings') else 'frozen'}, teacher targets "
         f"{'cached' if p.get('teacher_cache') else 'online'}", "speed on 2 cores", "04_speed"),
    ]
    lines = ["| what | paper | ours | why | evidence |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {w} | {pa} | {o} | {why} | [{nb}](notebooks/{nb}.ipynb) |" for w, pa, o, why, nb in rows_]
    return "\n".join(lines)


def rows(root=None) -> list[dict]:
    """The six claims: ``claim``, ``paper``, ``ours``, ``verdict``, ``notebooks``."""
    study = scaling(root)  # notebook 10's records, read once for C2, C3 and C6
    glue = {"C2": _glue("C2", study, root), "C3": _glue("C3", study, root)}
    made = {"C1": _c1(root), **glue, "C4": _c4(root), "C5": _c5(root, {g["verdict"] for g in glue.values()}),
            "C6": _c6(study, root)}
    return [{"claim": cid, "paper": PAPER[cid], **made[cid], "notebooks": NOTEBOOKS[cid]} for cid in PAPER]


def verdict_text(*cids: str, root=None) -> str:
    """The closing lines of a claim's notebook: each claim's verdict and number, as the README's table has them."""
    table = {r["claim"]: r for r in rows(root)}
    return "\n\n".join(f"**{c}: {table[c]['verdict']}.** Paper: {table[c]['paper']}. Ours: {table[c]['ours']}."
                       for c in cids)


def markdown(table: list[dict], link: str = "notebooks/{}.ipynb") -> str:
    """The table in markdown, and the verdicts' rules under it; ``link`` makes a notebook's name a path (another
    profile's table, in ``docs/``, links the sources: the committed executed notebooks show the committed profile)."""
    lines = ["| claim | paper | ours | verdict | notebook |", "| --- | --- | --- | --- | --- |"]
    for r in table:
        links = ", ".join(f"[{n}]({link.format(n)})" for n in r["notebooks"])
        lines.append(f"| {r['claim']} | {r['paper']} | {r['ours']} | **{r['verdict']}** | {links} |")
    lines.append("")
    lines.append("Verdicts: " + "; ".join(f"**{v}**: {rule}" for v, rule in VERDICTS.items()) + ".")
    return "\n".join(lines)


def _newest(name: str, root=None, keep=lambda r: True) -> dict | None:
    return next((r for r in records(name, root) if keep(r)), None)


def _pending(notebook: str) -> dict:
    return {"ours": f"no record yet (notebook {notebook})", "verdict": "pending"}


def _c1(root=None) -> dict:
    weights = _newest("02_methods", root, lambda r: not str(r["params"]["tensor"]).startswith("random"))
    if weights is None:
        return _pending("02")
    by_budget: dict[float, dict[str, float]] = {}
    for row in weights["result"]:
        if "rel_error" in row:
            by_budget.setdefault(row["budget_ratio"], {})[row["method"]] = row["rel_error"]
    ratio = min(by_budget, key=lambda r: abs(r - 48))  # the paper's tiny budget, or the nearest measured
    errors = by_budget[ratio]
    place = 1 + sum(e < errors["IV"] for e in errors.values())
    ours = f"1/{ratio:g}, weight error: Tucker #{place} of {len(errors)} (best {min(errors, key=errors.get)})"
    firsts = [place == 1]
    distilled = records("02_methods_distilled", root)
    for general, label in ((False, "task"), (True, "general + task")):
        rec = next((r for r in distilled if bool(r["params"].get("general")) == general), None)
        if rec is None:
            continue
        score = method_ranking(rec["result"])["score"]
        seeds = len(rec["params"].get("task_seeds") or [0])
        task = get_task(rec["result"]["task"]).name
        ours += (f"; {task} after {label} distillation: Tucker #{score['tucker_place']} of {len(score['values'])}"
                 + (f" ({seeds} seeds)" if seeds > 1 else ""))
        firsts.append(score["tucker_place"] == 1)
    verdict = "reproduced" if all(firsts) else "not reproduced" if not any(firsts) else "mixed"
    return {"ours": ours, "verdict": verdict}


def _peer(result: dict, name: str) -> str | None:
    return next((n for n, s in result["students"].items() if s.get("budget_of") == name), None)


def _glue(cid: str, study: dict, root=None) -> dict:
    rec = _newest("03_glue", root)
    if rec is None:
        return _pending("03")
    res = rec["result"]
    name = next(iter(student_near(res, 7.2 if cid == "C2" else 48.0) or ()), None)
    if name is None:
        return {"ours": f"no Tucker student near 1/{7 if cid == 'C2' else 48} in the record", "verdict": "pending"}
    st, pct = res["students"][name], res["summary"][name]["percent_of_teacher"]
    ours = (f"{name} ({st['ratio']:.1f}x, {st['params'] / 1e6:.2f}M weights): {pct:.1f}% of the teacher, "
            f"{gain_share(res, name):.1f}% of its gain over majority")
    peer = _peer(res, name)
    if peer:
        ours += f"; dense peer {res['summary'][peer]['percent_of_teacher']:.1f}%, {gain_share(res, peer):.1f}%"
    ours += f"; {general_tokens(res, name) / 1e6:.2f}M tokens"
    verdict = "reproduced" if pct >= TARGETS[cid] else "short at our budget"
    trend = study.get(cid)
    if trend is not None:  # the scaling study's curve decides a budget-limited verdict
        ours += trend["cell"]
        verdict = trend.get("verdict", verdict) if verdict != "reproduced" else verdict
    return {"ours": ours, "verdict": verdict}


def scaling(root=None) -> dict[str, dict]:
    """What notebook 10's points say for C2, C3 and C6: a short ``cell`` to append, and for C3 the ``verdict`` of its
    rule once a trend exists (two budgets or more)."""
    found = records(SCALING, root)
    if not found:
        return {"C3": {"cell": "; scaling study (10): no point measured yet"}}
    plan = found[0]["params"]["plan"]
    tucker = f"IV-{plan['tucker'][0]}-{plan['tucker'][1]}"
    by_student = curves(found, plan["scaling_tasks"])
    out = {"C2": {"cell": "; the ~1/7 pair is not in the scaling study yet"}}
    main = by_student.get(tucker)
    if main is None or len(main["tokens"]) < 2:
        out["C3"] = {"cell": f"; scaling study (10): {len(found)} point{'s' if len(found) != 1 else ''}, no trend yet"}
    else:
        t = fit_trend(main["tokens"], main["scores"], PAPER_GENERAL_TOKENS)
        low, high = t.value_interval
        span = f"{len(main['tokens'])} budgets to {max(main['tokens']) / 1e6:.1f}M tokens"
        out["C3"] = {"cell": f"; {span}, trend to ~6e9 (10): {t.value:.0f}% [{low:.0f}, {high:.0f}]",
                     "verdict": reach_verdict(t, TARGETS["C3"])}
    zero = by_student.get(f"{tucker} init=zero")
    common = sorted(set(main["tokens"]) & set(zero["tokens"])) if main and zero else []
    if common:
        last = common[-1]
        d, (low, high) = difference(main["scores"][main["tokens"].index(last)],
                                    zero["scores"][zero["tokens"].index(last)])
        out["C6"] = {"cell": f"; at {last / 1e6:.1f}M tokens (10): init {d:+.1f} [{low:+.1f}, {high:+.1f}]"}
    return out


def _c4(root=None) -> dict:
    found = tiny_speed(root)
    if found is None:
        return _pending("04")
    rec, tiny = found
    host = rec["result"].get("host") or {}
    cpu = host.get("cpu_model") or rec["provenance"].get("cpu_model") or rec["provenance"].get("cpu") or "CPU"
    cpu = re.sub(r"\((R|TM)\)| Processor\b", "", cpu).strip()  # "Intel(R) Xeon(R) Processor" -> "Intel Xeon"
    isa = f", {host['isa'][-1]}" if host.get("isa") else ""  # its widest instruction set (notebook 04 lists them all)
    ours = (f"IV-{tiny['rank_layer']}-{tiny['rank_dim']}, BERT-base shape, batch 8 x 128, fp32, "
            f"{rec['result']['threads']} threads ({cpu}{isa}): {tiny['speedup']:.2f}x{speed_interval(tiny)}, "
            f"{tiny['fraction_of_mac_limit']:.2f} of its {tiny['mac_ratio']:.2f}x MAC limit")
    runtimes = next(iter(bert_base_records("04_runtimes", root)), {"result": {"rows": []}})
    others = [r for r in runtimes["result"]["rows"] if r.get("runtime") not in (None, "eager") and r["batch"] == 8
              and r["seq_len"] == 128 and r.get("precision") == "fp32" and r.get("model") == tiny.get("model")]
    if others:
        ours += "; " + ", ".join(f"{r['runtime']} {r['speedup']:.2f}x" for r in others)
    return {"ours": ours, "verdict": c4_verdict(tiny)}


def _c5(root=None, glue_verdicts: set[str] = frozenset()) -> dict:
    """C5 rests on C2/C3: their verdict (``glue_verdicts``), and the teacher's zero-shot STS-B the students keep."""
    rec = _newest("03_glue", root)
    if rec is None:
        return _pending("03")
    res = rec["result"]
    teacher = res.get("proxies", {}).get("teacher", {}).get("stsb")
    kept = []
    for ratio in (7.2, 48.0):
        name = next(iter(student_near(res, ratio) or ()), None)
        if name and teacher and res["students"][name].get("curve"):
            kept.append(f"{100 * res['students'][name]['curve'][-1]['stsb'] / teacher:.1f}% (1/{ratio:.0f})")
    ours = (f"rests on C2/C3: the teacher is a distilled MiniLM; its zero-shot STS-B kept: {', '.join(kept)}"
            if rec["params"].get("teacher") == "minilm" else "the profile's teacher is not a distilled model")
    return {"ours": ours, "verdict": next(iter(glue_verdicts)) if len(glue_verdicts) == 1 else "mixed"}


def _c6(study: dict, root=None) -> dict:
    rec = _newest("03_glue", root)
    speed = next((r for r in records("04_speed", root) if r["params"]["geometry"] == "bert-base"
                  and "sweep" not in r["params"]), None)
    if rec is None or speed is None or not rec["result"].get("controls"):
        return _pending("03 and 04")
    res = rec["result"]
    main_name = next(n for n, s in res["students"].items() if s["kind"] == "tucker")
    main = res["students"][main_name]
    zero = next((c for c in res["controls"].values() if c.get("init") == "zero"
                 and c.get("objective") == main.get("objective")), None)
    rows_ = {(r["kind"], r.get("rank_layer"), r.get("rank_dim")): r for r in speed["result"]["rows"]
             if r["batch"] == 8 and r["seq_len"] == 128}
    fac = max((r for (k, *_), r in rows_.items() if k == "tucker-factorized"), key=lambda r: r["speedup"])
    rebuilt = rows_.get(("tucker-reconstructed", fac["rank_layer"], fac["rank_dim"]))
    parts, halves = [], []
    if zero is not None:
        a, b = main["curve"][-1]["stsb"], zero["curve"][-1]["stsb"]
        parts.append(f"init: Tucker {a:.1f} vs zero maps {b:.1f} zero-shot STS-B after {main['steps']} steps "
                     f"({main_name})")
        halves.append(a - b >= SAME)
    parts.append(f"forward: factorized {fac['speedup']:.2f}x dense"
                 + (f", rebuilt W_i {rebuilt['speedup']:.2f}x" if rebuilt else "")
                 + f" (IV-{fac['rank_layer']}-{fac['rank_dim']})")
    halves.append(rebuilt is None or fac["speedup"] > rebuilt["speedup"])
    verdict = "reproduced" if all(halves) else "not reproduced" if not any(halves) else "mixed"
    return {"ours": "; ".join(parts) + study.get("C6", {}).get("cell", ""), "verdict": verdict}
