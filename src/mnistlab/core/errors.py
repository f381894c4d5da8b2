"""Errors that mean "the input is wrong" (the CLI prints their one-line message and exits with 2), the
bounds every input is checked against, and what the CLI's boundary says for an OSError or a stop
signal (SIGTERM, SIGHUP: `Stopped`, a KeyboardInterrupt)."""

import errno
import math
import numbers
import os


class ConfigError(ValueError):
    """A preset, override or config value is wrong; the message says what to fix."""


def check(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless `condition` holds; used by configs' __post_init__."""
    if not condition:
        raise ConfigError(message)


# The largest seed numpy's RandomState and scikit-learn's random_state accept (torch takes more).
SEED_MAX = 2**32 - 1


def show_value(value: object) -> str:
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
        f"{name} must be a whole number, got {show_value(value)}",
    )
    reason = f" ({why})" if why else ""
    check(low <= value <= high, f"{name} must be in [{low}, {high}]{reason}, got {show_value(value)}")


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
        f"{name} must be a number, got {show_value(value)}",
    )
    # An int is always finite (math.isfinite would overflow on a huge one); a float may be inf or NaN.
    check(isinstance(value, numbers.Integral) or math.isfinite(value), f"{name} must be finite, got {value}")
    above = low < value if low_open else low <= value
    below = value < high if high_open else value <= high
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    reason = f" ({why})" if why else ""
    check(above and below, f"{name} must be in {interval}{reason}, got {show_value(value)}")


def check_bool(value: object, name: str) -> None:
    check(isinstance(value, bool), f"{name} must be true or false, got {show_value(value)}")


def check_seed(value: object, name: str) -> None:
    check_int(value, name, 0, SEED_MAX, "numpy and scikit-learn take seeds up to 2^32 - 1")


class WorkersDied(RuntimeError):
    """Local search workers died and the study is still short of its trials: the search did not finish."""


# Threads or worker processes an input may ask for, per core: more only slows every one of them down
# (`serve --threads 100000` once started ~32,000 threads before the machine ran out).
THREADS_PER_CORE = 4


def max_threads() -> int:
    return THREADS_PER_CORE * (os.cpu_count() or 1)


def check_threads(value: object, name: str, low: int = 1) -> None:
    """Threads or processes asked for by an input: a whole number in [low, 4 x this machine's cores]."""
    cores = max_threads() // THREADS_PER_CORE
    check_int(value, name, low, max_threads(), f"at most {THREADS_PER_CORE} x this machine's {cores} cores")


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread as Ctrl-C raises KeyboardInterrupt, so that the
    same cleanup runs (a study stops its workers, run.json records each stage). `signum` gives the
    exit code, 128 + signum, as a shell reports a process that the signal killed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def saved_note(error: BaseException) -> str | None:
    """What an interrupted command had saved, as the code that knows set it (`error.saved`)."""
    return getattr(error, "saved", None)


# errno values that only a write gives (a read-only file system, a full disk or quota, a file past
# RLIMIT_FSIZE), so the message can say "cannot write"; other errors name no direction.
_WRITE_ERRNOS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_READ_ERRNOS = frozenset({errno.ENOENT})


def os_error_line(error: OSError) -> str:
    """An OSError as one line for the CLI: "cannot write PATH: No space left on device"."""
    reason = error.strerror or str(error) or type(error).__name__
    verb = "write" if error.errno in _WRITE_ERRNOS else "read" if error.errno in _READ_ERRNOS else "use"
    path = error.filename
    if path is None:
        return f"{verb} failed: {reason}".splitlines()[0]
    shown = os.fsdecode(path) if isinstance(path, (str, bytes)) else str(path)  # (or a file descriptor)
    if len(shown) > 200:  # a name past the OS's length limit would fill the screen
        shown = shown[:100] + "..." + shown[-60:]
    line = f"cannot {verb} {shown}: {reason}"
    if error.filename2 is not None:
        line += f" (to {str(error.filename2)[:200]})"
    return " ".join(line.split())
