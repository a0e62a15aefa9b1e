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
# Each claim of Ren et al. (2022) beside our measured number, the profile it was measured on, and the results
# file it comes from (`tdlib.paper.report`, built from `results/*/*.json` only). With `update_readme = True` this
# notebook rewrites the README's results table, so the README shows no number that a notebook did not write.
# Another profile's run (e.g. `quick`) reads its own records (`results/<profile>/`) and writes its own table,
# between the README's `<!-- claims:<profile>:start -->` markers.

# %% tags=["parameters"]
profile = "cpu"
update_readme = True


# %%
from tdlib.paper.reproduce import notebook_parameters

run = notebook_parameters("06_claims", globals())  # papermill -p strings are coerced; a wrong type stops here
print(f"profile: {run.profile}" + (f" (from {run.base_profile}, overriding {', '.join(run.overrides)})"
                                   if run.overrides else ""))

# %%
import pandas as pd

from tdlib.paper.report import claims, markdown_table, write_readme_table

rows = claims()
pd.DataFrame(rows)

# %%
# NBVAL_IGNORE_OUTPUT
# (volatile: whether this run changed the README)
if update_readme:
    changed = write_readme_table(rows, profile=run.base_profile)  # another profile's table has its own markers
    print("README.md claims table", "updated" if changed else "already current")

# %%
print(markdown_table(rows, run.base_profile))
