"""User-facing errors: raised for bad input, printed as one line by the entry points."""


class UserError(Exception):
    """A mistake the user can fix (bad config value, missing data, corrupt checkpoint)."""


class ConfigError(UserError):
    """An invalid configuration value."""


class DataNotFoundError(UserError):
    """A dataset is absent and could not be fetched."""


class DataCorruptError(UserError):
    """A dataset file is present but modified, truncated or malformed."""


class CheckpointError(UserError):
    """A checkpoint file is missing, truncated or not a checkpoint of this tool."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def require_choice(name: str, value: object, choices: "list | tuple | set | dict") -> None:
    """Raise :class:`ConfigError` naming the valid choices unless ``value`` is one of them."""
    if value not in choices:
        valid = ", ".join(str(c) for c in sorted(choices, key=str))
        raise ConfigError(f"{name}={value!r} is not valid; choose one of: {valid}")
