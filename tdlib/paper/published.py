"""Published numbers we set our measurements beside. Not computed here: each entry names its source.

Why a module: a reader should see our teacher next to what the literature reports for a model of its size,
and every such number should live in one place with its citation instead of in notebook cells.
"""

from __future__ import annotations

# Dev-set scores x 100 of MiniLM-L6-H384 fine-tuned per task (the all-MiniLM-L6-v2 geometry: 6 layers, hidden 384).
# Source: the figures quoted in tdlib issue #15 ("published MiniLM-L6-H384 dev scores"); the original table
# (MiniLM/MiniLMv2 papers, arXiv 2002.10957 / 2012.15828) could not be re-checked offline. STS-B not quoted.
MINILM_L6_H384_DEV = {"cola": 47.5, "sst2": 91.5, "mrpc": 88.9, "rte": 68.8}
MINILM_L6_H384_SOURCE = "MiniLM-L6-H384 dev scores as quoted in tdlib issue #15 (MiniLM papers; not re-checked)"

# Zero-shot STS-B Spearman x 100 of all-MiniLM-L6-v2's cosine similarity (MTEB, **test** split), as quoted in
# issue #15; our proxy uses the dev split, so the two are not the same measurement.
ALL_MINILM_L6_V2_STSB_TEST = 82.0

# The paper's general-distillation budget in tokens: 2 epochs of English Wikipedia (about 2.5B words, some 3B
# WordPiece tokens) at length 128 (../shared/PAPER.md, "The paper's general-distillation budget": "on the order of 6B
# tokens"). An order of magnitude, used only to say how far below it our budget is.
PAPER_GENERAL_TOKENS = 6e9
