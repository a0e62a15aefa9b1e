"""The claims table (C1-C5): the paper's statement, our measured number, and where it comes from.

Built only from results records (``results/<notebook>/*.json``), never typed: notebook 06 calls
:func:`claims` and :func:`write_readme_table`, which rewrites the README between two markers.
A claim whose experiment has not run yet says so instead of showing a number.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .results import RESULTS, ROOT

START, END = "<!-- claims:start -->", "<!-- claims:end -->"
PAPER = {
    "C1": "Tucker is the most parameter-efficient decomposition for BERT's weights",
    "C2": "1/7 of the Transformer-layer parameters: on par with BERT-base on GLUE",
    "C3": "1/48 of the encoder parameters (< 2M): 96.7% of BERT-base's GLUE average",
    "C4": "the 1/48 model is 2.7x faster at inference",
    "C5": "also compresses an already distilled BERT",
}


def records(name: str, root: str | os.PathLike | None = None) -> list[dict]:
    """Every record of one notebook, newest first, each with its ``path``."""
    folder = Path(root or RESULTS) / name
    out = []
    for path in folder.glob("*.json"):
        rec = json.loads(path.read_text())
        rec["path"] = str(path)
        out.append(rec)
    return sorted(out, key=lambda r: r["provenance"].get("created", ""), reverse=True)


def _rel(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


def claim_c1(root=None) -> dict:
    recs = [r for r in records("02_methods", root) if not str(r["params"]["tensor"]).startswith("random")]
    if not recs:
        return {"ours": "not measured yet (notebook 02)", "status": "pending"}
    rec = recs[0]
    by_budget: dict[float, dict[str, float]] = {}
    for row in rec["result"]:
        if "rel_error" in row:
            by_budget.setdefault(row["budget_ratio"], {})[row["method"]] = row["rel_error"]
    wins = [ratio for ratio, errs in by_budget.items() if min(errs, key=errs.get) == "IV"]
    place = {ratio: 1 + sorted(errs.values()).index(errs["IV"]) for ratio, errs in by_budget.items() if "IV" in errs}
    detail = ", ".join(f"1/{ratio:g}: best {min(errs, key=errs.get)}, Tucker #{place.get(ratio)}"
                       for ratio, errs in sorted(by_budget.items()))
    status = ("supported (weights)" if len(wins) == len(by_budget) else
              "not supported (weights)" if not wins else "partly (weights)")
    return {"ours": f"Tucker has the lowest weight error at {len(wins)}/{len(by_budget)} budgets on "
                    f"{rec['params']['tensor']} ({detail}); the post-distillation half is not measured yet",
            "status": status,
            "source": _rel(rec["path"]), "profile": rec["provenance"].get("profile")}


def claim_c4(root=None) -> dict:
    raw = 144 * 768 * 768  # BERT-base's decomposable weights
    for rec in records("04_speed", root):
        if rec["params"]["geometry"] != "bert-base" or "sweep" in rec["params"]:
            continue
        rows = [r for r in rec["result"]["rows"] if r["kind"] == "tucker-factorized" and r["batch"] == 8
                and r["seq_len"] == 128]
        if not rows:
            continue
        # the paper's tiny model: the config whose compression is closest to 1/48
        tiny = min(rows, key=lambda r: abs(raw / r.get("decomposed_params", raw) - 48))
        return {"ours": f"{tiny['speedup']:.2f}x for IV-{tiny['rank_layer']}-{tiny['rank_dim']} on BERT-base "
                        f"geometry (batch 8 x 128, {rec['result']['threads']} CPU threads); "
                        f"{tiny['fraction_of_mac_limit']:.2f} of its {tiny['mac_ratio']:.2f}x MAC limit",
                "status": "reproduced" if tiny["speedup"] >= 2.7 else "falls short",
                "source": _rel(rec["path"]), "profile": rec["provenance"].get("profile")}
    return {"ours": "not measured yet (notebook 04)", "status": "pending"}


def claims(root=None) -> list[dict]:
    measured = {"C1": claim_c1(root), "C4": claim_c4(root)}
    pending = {"ours": "not measured yet: needs GLUE distillation (tdlib.distill)", "status": "pending"}
    return [{"claim": cid, "paper": text, **measured.get(cid, pending)} for cid, text in PAPER.items()]


def markdown_table(rows: list[dict]) -> str:
    lines = ["| claim | paper | ours | status | source |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        src = f"`{r['source']}` ({r.get('profile')})" if r.get("source") else ""
        lines.append(f"| {r['claim']} | {r['paper']} | {r['ours']} | {r['status']} | {src} |")
    return "\n".join(lines)


def write_readme_table(rows: list[dict], readme: str | os.PathLike = ROOT / "README.md") -> bool:
    """Replace the README's claims table between the markers; returns whether the file changed."""
    path = Path(readme)
    text = path.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{path} lacks the {START} / {END} markers")
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), f"{START}\n{markdown_table(rows)}\n{END}", text,
                 flags=re.S)
    if new != text:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(new)
        os.replace(tmp, path)
    return new != text
