"""One exception family, so callers (and the CLI) can tell user mistakes from bugs.

Every error raised on bad input derives from :class:`TdlibError` and says what is wrong *and* how
to fix it; the CLI prints the message alone, without a traceback.
"""

from __future__ import annotations


class TdlibError(ValueError):
    """Base class: bad input that the user can fix."""


class RankError(TdlibError):
    """Ranks that are not positive integers or exceed the tensor they decompose."""


class UnsupportedModelError(TdlibError):
    """A model without BERT's module layout, or with an FFN width that is not a multiple of D."""


class CheckpointError(TdlibError):
    """A missing, corrupt or mismatched checkpoint directory."""


class ConfigError(TdlibError):
    """Unknown option names or values (ops, method, implementation, config keys, parameters)."""


class DataError(TdlibError):
    """Missing, empty or malformed data files."""


def check_choice(name: str, value: str, choices: tuple[str, ...] | list[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ConfigError listing them."""
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}")
    return value


def check_rank(name: str, value: object, upper: int | None = None, upper_name: str = "") -> int:
    """Validate one rank: a positive int, at most ``upper`` (the size of the mode it truncates)."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise RankError(f"{name} must be a positive integer, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise RankError(f"{name} must be a positive integer, got {value}")
    if upper is not None and value > upper:
        raise RankError(f"{name}={value} exceeds {upper_name or 'its mode size'} ({upper}); use {name} <= {upper}")
    return value
