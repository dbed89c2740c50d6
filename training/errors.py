"""Errors raised by the training package (subclasses of the project's root type)."""

from daemon.errors import CanneError


class TrainingError(CanneError, ValueError):
    """A training step got bad input; the message names the value and the fix."""


class CorpusError(TrainingError):
    """A corpus source is missing, empty or unreadable."""


class ExportError(TrainingError):
    """ONNX export failed or did not match torch within tolerance."""
