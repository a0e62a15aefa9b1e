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
# # 06 · The claims table
#
# **Claim.** Ren et al. (2022) make six claims (C1-C6, `../shared/PAPER.md`). **Method.** Each claim's number is read
# from the records its notebook wrote (`results/<notebook>/*.json`), never typed; its verdict follows rules fixed
# before the runs: the paper's own targets (100% of the teacher for C2, 96.7% for C3, 2.7x for C4, Tucker first for
# C1) and what our budget can limit. **Result.** The short table below is the README's; the long one under it gives
# every measurement each claim rests on. With `update_readme = True` the notebook writes the short table, the budget
# paragraph and the departures table into the README (another profile's table goes to `docs/DETAILS.md`; a run with
# parameters of its own writes nothing).

# %% tags=["parameters"]
profile = "cpu"
update_readme = True


# %%
from tdlib.paper.reproduce import notebook_parameters

run = notebook_parameters("06_claims", globals())  # papermill -p strings are coerced; a wrong type stops here
print(run)

# %%
import pandas as pd

from tdlib.paper import claims as front
from tdlib.paper.report import claims

table = front.rows()
pd.set_option("display.max_colwidth", None)
pd.DataFrame(table).drop(columns="notebooks").set_index("claim")

# %% [markdown]
# **The verdicts' rules**, written once:

# %%
pd.Series(front.VERDICTS, name="rule").to_frame()

# %% [markdown]
# **What the budget can tell**, and where the profile departs from the paper's recipe (both read from notebook 03's
# record):

# %%
print(front.budget_sentence())
print()
print(front.departures())

# %% [markdown]
# **The long form**: every measurement each claim rests on, the status it reads, and the records it comes from.

# %%
pd.DataFrame(claims()).set_index("claim")

# %%
# NBVAL_IGNORE_OUTPUT
# (the file's path differs where TDLIB_README names another)
from tdlib.paper.readme import block_name, readme_path, write_block
from tdlib.paper.reproduce import COMMITTED
from tdlib.studies.records import shown

if update_readme and run.profile != "custom":  # a run with parameters of its own writes no table
    path = readme_path(run.base_profile)
    blocks = {"claims": front.markdown(table, "notebooks/{}.ipynb" if run.base_profile == COMMITTED else
                                       "../notebooks/{}.py")}
    if run.base_profile == COMMITTED:
        blocks.update(budget=front.budget_sentence(), departures=front.departures())
    for name, text in blocks.items():
        write_block(block_name(name, run.base_profile), text, path)
    # the same line whether or not this run changed the file, so a second `make reproduce` leaves git status clean
    print(f"{shown(path)}: the {', '.join(blocks)} blocks now match the records")

# %% [markdown]
# **Verdict.** The table as the README shows it:

# %%
print(front.markdown(table))
