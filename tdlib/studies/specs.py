"""The students a study trains, one typed record each: what a run's identity holds about its model.

A spec names the student and says how to build it: :class:`TuckerSpec` (the paper's method IV at ranks
``rank_layer``/``rank_dim``, from one of the inits of protocol 1), :class:`BaselineSpec` (a dense BERT with fewer or
narrower layers at the same parameter budget), :class:`MethodSpec` (any compared decomposition, notebook 02) and
:class:`GivenSpec` (a model directory the CLI was handed). :meth:`as_dict` is the form run identities and records
store, so a run's folder name and a record's entries are what they were when specs were dicts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class _Spec:
    kind: ClassVar[str] = ""
    OPTIONAL: ClassVar[tuple[str, ...]] = ()  # fields left out of as_dict() while None

    def as_dict(self) -> dict:
        out = {"kind": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not (f.name in self.OPTIONAL and value is None):
                out[f.name] = value
        return out

    def renamed(self, name: str):
        return dataclasses.replace(self, name=name)


@dataclass(frozen=True)
class TuckerSpec(_Spec):
    """Method IV at (``rank_layer``, ``rank_dim``) on ``ops``, initialised by ``init`` and distilled with ``objective``.

    ``fit`` (BlockwiseFit's settings) and ``calibration`` (cached_calibration's: sequences, skip) are the data-aware
    inits' options; they enter the run's identity only when set, so other options train in another run folder.
    """

    rank_layer: int
    rank_dim: int
    ops: str = "san_ffn"
    init: str = "pretrained"
    objective: str = "last_layer"
    fit: dict | None = None
    calibration: dict | None = None
    name: str = ""
    kind: ClassVar[str] = "tucker"
    OPTIONAL: ClassVar[tuple[str, ...]] = ("fit", "calibration")

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", f"IV-{self.rank_layer}-{self.rank_dim}")


@dataclass(frozen=True)
class BaselineSpec(_Spec):
    """A dense BERT of ``num_layers`` layers of width ``hidden_size`` and FFN ``intermediate_size``, sized to the
    budget of the Tucker student ``budget_of``."""

    num_layers: int
    hidden_size: int
    intermediate_size: int
    budget_of: str | None = None
    objective: str = "last_layer"
    name: str = ""
    kind: ClassVar[str] = "baseline"

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", f"dense-{self.num_layers}L-{self.hidden_size}-{self.intermediate_size}")


@dataclass(frozen=True)
class MethodSpec(_Spec):
    """A student of any compared method (notebook 02's C1 comparison): the teacher with its maps read from a
    decomposition of ``ranks``; its model is built from the fit the caller chose
    (:func:`tdlib.core.modeling.with_decomposition`)."""

    method: str
    ranks: dict
    ops: str = "san_ffn"
    objective: str = "last_layer"
    name: str = ""
    kind: ClassVar[str] = "method"

    def __post_init__(self) -> None:
        if not self.name:
            tag = "-".join(str(v) for k, v in self.ranks.items() if k != "matrix_mode")
            object.__setattr__(self, "name", f"{self.method}-{tag}")


@dataclass(frozen=True)
class GivenSpec(_Spec):
    """A model directory given as it is (the CLI's ``distill task --student DIR``)."""

    name: str
    kind: ClassVar[str] = "given"


StudentSpec = TuckerSpec | BaselineSpec | MethodSpec | GivenSpec
