"""Source of notebooks/06_claims.ipynb."""

from nbbuild import build

build("notebooks/06_claims.ipynb", [
    ("md", """
# 06 · The claims table

Each claim of Ren et al. (2022) beside our measured number, the profile it was measured on, and the results
file it comes from (`tdlib.report`, built from `results/*/*.json` only). With `update_readme = True` this
notebook rewrites the README's results table, so the README shows no number that a notebook did not write.
"""),
    ("params", """
profile = "cpu"
update_readme = True
"""),
    ("code", """
import pandas as pd
from tdlib.report import claims, markdown_table, write_readme_table

rows = claims()
pd.DataFrame(rows)
"""),
    ("code", """
if update_readme:
    changed = write_readme_table(rows)
    print("README.md claims table", "updated" if changed else "already current")
print(markdown_table(rows))
"""),
])
