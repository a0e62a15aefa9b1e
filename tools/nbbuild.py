"""Write a notebook from a list of (kind, source) cells: the notebooks' sources stay reviewable as Python.

Usage (from a notebook spec module): ``build(path, cells)`` where kind is "md", "code", "params"
(the papermill ``parameters`` cell) or "check" (a code cell nbval compares, ``# NBVAL_CHECK_OUTPUT``).
"""

from __future__ import annotations

import nbformat


def build(path: str, cells: list[tuple[str, str]]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "tdlib", "display_name": "tdlib (.venv)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, source in cells:
        source = source.strip("\n")
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
        elif kind == "params":
            nb.cells.append(nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]}))
        elif kind == "check":
            nb.cells.append(nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\n" + source))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(source))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    nbformat.write(nb, path)
