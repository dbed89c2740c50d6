"""One root exception type for the project.

Subclasses also inherit the matching builtin so callers can catch either.
Messages name the bad value and, where possible, the fix.
"""


class CanneError(Exception):
    """Root of every error CANNe Live raises on purpose."""


class ModelError(CanneError, ValueError):
    """A model file is missing, unreadable or lacks required metadata."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """A model path does not exist."""


class MappingError(CanneError, ValueError):
    """A YAML mapping is invalid (names file, line, field, value, allowed range)."""


class DeviceError(CanneError, RuntimeError):
    """An audio or MIDI device is missing or failed."""
