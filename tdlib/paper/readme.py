"""The README's generated blocks: text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``, rewritten whole.

Notebook 06 writes the committed profile's claims table, the budget paragraph and the departures table into the
README; another profile's claims table goes to ``docs/DETAILS.md`` under its own name (``claims:quick``), so the
front page always shows the committed profile's numbers. ``$TDLIB_README`` points every write at a scratch copy
(``make test``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tdlib.core.errors import ConfigError
from tdlib.paper.reproduce import COMMITTED
from tdlib.studies.records import ROOT


def readme_path(profile: str | None = None) -> Path:
    """Where ``profile``'s blocks live: the README for the committed profile, ``docs/DETAILS.md`` for another."""
    if os.environ.get("TDLIB_README"):
        return Path(os.environ["TDLIB_README"])
    return ROOT / ("README.md" if profile in (None, COMMITTED) else "docs/DETAILS.md")


def block_name(name: str, profile: str | None = None) -> str:
    """``claims`` for the committed profile, ``claims:quick`` for the quick one."""
    return name if profile in (None, COMMITTED) else f"{name}:{profile}"


def write_block(name: str, text: str, path: str | os.PathLike) -> bool:
    """Replace the block ``name`` of ``path`` with ``text``; returns whether the file changed. A file without the
    block's two markers is one ConfigError naming them."""
    path = Path(path)
    content = path.read_text()
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in content or end not in content:
        raise ConfigError(f"{path} lacks the {start} / {end} markers: add the pair where the block belongs, or run "
                          "notebook 06 with update_readme=False")
    new = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n{text}\n{end}", content, flags=re.S)
    if new != content:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(new)
        os.replace(tmp, path)
    return new != content


def read_block(name: str, path: str | os.PathLike) -> str:
    """The text of block ``name`` (empty when the markers hold nothing)."""
    content = Path(path).read_text()
    m = re.search(re.escape(f"<!-- {name}:start -->") + "(.*?)" + re.escape(f"<!-- {name}:end -->"), content, re.S)
    if m is None:
        raise ConfigError(f"{path} has no block {name!r}")
    return m.group(1).strip()
