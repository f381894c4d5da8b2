"""Errors that mean "the input is wrong": the CLI prints their one-line message and exits with 2."""

import math
import numbers


class ConfigError(ValueError):
    """A preset, override or config value is wrong; the message says what to fix."""


def check(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless `condition` holds; used by configs' __post_init__."""
    if not condition:
        raise ConfigError(message)


# The largest seed numpy's RandomState and scikit-learn's random_state accept (torch takes more).
SEED_MAX = 2**32 - 1


def _show(value: object) -> str:
    """A bad value for a message, kept to one short line: str() of an int over 4,300 digits raises."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value).bit_length() > 64:
        return f"a {int(value).bit_length()}-bit number"
    text = " ".join(repr(value).split())  # some reprs span lines (numpy arrays)
    return text if len(text) <= 60 else text[:57] + "..."


def check_int(value: object, name: str, low: int, high: int, why: str = "") -> None:
    """A whole number (not a bool) in [low, high]; `why` says where the bound comes from when that is
    not obvious (memory, the machine), so the message tells what to do."""
    check(
        isinstance(value, numbers.Integral) and not isinstance(value, bool),
        f"{name} must be a whole number, got {_show(value)}",
    )
    reason = f" ({why})" if why else ""
    check(low <= value <= high, f"{name} must be in [{low}, {high}]{reason}, got {_show(value)}")


def check_float(
    value: object,
    name: str,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
    why: str = "",
) -> None:
    """A finite number (int or float, not a bool) in the interval from low to high, each end closed
    unless `low_open` / `high_open`. NaN fails every comparison, so it is named as such first."""
    check(
        isinstance(value, numbers.Real) and not isinstance(value, bool),
        f"{name} must be a number, got {_show(value)}",
    )
    # An int is always finite (math.isfinite would overflow on a huge one); a float may be inf or NaN.
    check(isinstance(value, numbers.Integral) or math.isfinite(value), f"{name} must be finite, got {value}")
    above = low < value if low_open else low <= value
    below = value < high if high_open else value <= high
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    reason = f" ({why})" if why else ""
    check(above and below, f"{name} must be in {interval}{reason}, got {_show(value)}")


def check_bool(value: object, name: str) -> None:
    check(isinstance(value, bool), f"{name} must be true or false, got {_show(value)}")


def check_seed(value: object, name: str) -> None:
    check_int(value, name, 0, SEED_MAX, "numpy and scikit-learn take seeds up to 2^32 - 1")


class WorkersDied(RuntimeError):
    """Local search workers died and the study is still short of its trials: the search did not finish."""
