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
# # 01 · Decomposability: where is BERT's redundancy?
#
# The paper's argument for Tucker: the 12L weight matrices of BERT are more redundant *across* matrices
# (they share input/output subspaces and resemble each other) than each matrix is low-rank on its own.
# We measure both on the teacher's stacked (n, D, D) tensor (`tdlib.core.stacking.stack_weights`):
#
# * **intra-matrix**: the singular values of each D x D matrix alone (what per-matrix SVD, method II, exploits);
# * **inter-matrix**: the singular values of the tensor's mode unfoldings: mode 0 (n x D², similarity
#   between matrices, what the bank size l exploits) and modes 1, 2 (D x nD, a shared input/output subspace
#   for all matrices, what shared U and V exploit).
#
# A random Gaussian tensor of the same shape and norm is the no-structure baseline.

# %% tags=["parameters"]
profile = "cpu"
teacher = "minilm"
ops = "san_ffn"
energy_levels = [0.5, 0.7, 0.9]
ranks = [[36, 192], [16, 96]]  # (rank_layer, rank_dim) of the Tucker students: the energy their factors keep
seed = 0


# %%
from tdlib.paper.reproduce import notebook_parameters
from tdlib.studies.records import describe

run = notebook_parameters("01_decomposability", globals())  # papermill -p strings are coerced; a wrong type stops here
print(run)

# %%
# NBVAL_IGNORE_OUTPUT
# (volatile: which records were read or computed, and where)
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from tdlib import load_model, stack_weights
from tdlib.paper.plots import savefig
from tdlib.studies.methods import rank_for_energy, spectra
from tdlib.studies.provenance import seed_everything
from tdlib.studies.records import cached

seed_everything(seed)
weights = stack_weights(load_model(teacher), ops)
noise = torch.randn(weights.shape, generator=torch.Generator().manual_seed(seed)) * weights.std()
params = {"teacher": teacher, "ops": ops, "seed": seed}
record = cached("01_decomposability", params,
                lambda: {"teacher": spectra(weights), "random": spectra(noise)}, seed=seed, **run.record_kwargs())
print(describe(record))

# %%
# NBVAL_CHECK_OUTPUT
print("stacked tensor shape:", tuple(weights.shape))

# %%
res = record["result"]
rows = []
for source in ("teacher", "random"):
    s = res[source]
    n, D, _ = s["shape"]
    for level in energy_levels:
        rows.append({"tensor": source, "energy": level,
                     "single matrix, mean curve (d / D)": rank_for_energy(s["per_matrix"]["mean"], level) / D,
                     "mode-1 unfolding (d / D)": rank_for_energy(s["mode1"], level) / D,
                     "mode-2 unfolding (d / D)": rank_for_energy(s["mode2"], level) / D,
                     "mode-0 unfolding (l / n)": rank_for_energy(s["mode0"], level) / n})
table = pd.DataFrame(rows).round(3)
table

# %% [markdown]
# At the students' ranks: the energy of each unfolding that a bank of `rank_layer` matrices (mode 0) and shared
# factors of width `rank_dim` (modes 1 and 2) can hold, teacher against random. Energy per mode is an upper bound on
# what the Tucker fit keeps, not the fit itself (notebook 02 measures that).

# %%
at_ranks = []
for rank_layer, rank_dim in ranks:
    for source in ("teacher", "random"):
        s = res[source]
        at_ranks.append({"ranks": f"IV-{rank_layer}-{rank_dim}", "tensor": source,
                         "mode-0 energy at l": s["mode0"][min(rank_layer, len(s["mode0"])) - 1],
                         "mode-1 energy at d": s["mode1"][min(rank_dim, len(s["mode1"])) - 1],
                         "mode-2 energy at d": s["mode2"][min(rank_dim, len(s["mode2"])) - 1]})
pd.DataFrame(at_ranks).set_index(["ranks", "tensor"]).round(3)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
for ax, source in zip(axes, ("teacher", "random"), strict=True):
    s = res[source]
    n, D, _ = s["shape"]
    x = np.arange(1, D + 1) / D
    ax.plot(x, s["per_matrix"]["mean"], label="single matrix (mean)")
    ax.fill_between(x, s["per_matrix"]["min"], s["per_matrix"]["max"], alpha=0.2)
    ax.plot(x, s["mode1"], label="mode-1 unfolding (shared U)")
    ax.plot(x, s["mode2"], label="mode-2 unfolding (shared V)", ls="--")
    ax.plot(np.arange(1, n + 1) / n, s["mode0"], label="mode-0 unfolding (bank size l / n)")
    for _, rank_dim in ranks:  # the students' ranks on the shared-factor curve
        ax.plot(rank_dim / D, s["mode1"][min(rank_dim, D) - 1], "k.", ms=7)
        ax.annotate(f"d={rank_dim}", (rank_dim / D, s["mode1"][min(rank_dim, D) - 1]), fontsize=7,
                    textcoords="offset points", xytext=(4, -10))
    ax.set_title(f"{teacher if source == 'teacher' else 'random Gaussian'} {tuple(s['shape'])}")
    ax.set_xlabel("rank / mode size")
    ax.grid(alpha=0.3)
axes[0].set_ylabel("energy captured (fraction of ||W||²)")
axes[0].legend(fontsize=8)
fig.tight_layout()
savefig(fig, "01_decomposability")
plt.show()

# %% [markdown]
# Reading the figure: compare each curve with its **random counterpart** (right panel), not with the other
# curves. A random square matrix already has a concave spectrum (Marchenko-Pastur), while the unfoldings of a
# random tensor are almost linear; the teacher's lead over its random counterpart is the redundancy that a
# decomposition along that mode can remove. The fraction of each mode needed for a given energy, teacher vs
# random, is in the table above (`results/01_decomposability/`). Energy per rank is not energy per parameter:
# a rank-d factor of one matrix costs 2Dd parameters for one matrix, a rank-d shared factor costs 2Dd for all n,
# which is why notebook 02 compares methods at equal parameter budgets.
