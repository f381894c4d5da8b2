"""Errors that mean "the input is wrong": the CLI prints their one-line message and exits with 2."""


class ConfigError(ValueError):
    """A preset, override or config value is wrong; the message says what to fix."""


def check(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless `condition` holds; used by configs' __post_init__."""
    if not condition:
        raise ConfigError(message)
