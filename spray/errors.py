"""Error types.

Every error spray raises on bad input derives from :class:`SprayError` and carries a message that
names the problem *and* the fix. The CLI turns these into a one-paragraph message and an exit code,
never a traceback dump.
"""

from __future__ import annotations


class SprayError(Exception):
    """Base class for errors caused by bad input or environment (not by a bug in spray)."""

    exit_code: int = 1


class ConfigError(SprayError):
    """The configuration is invalid (unknown key, wrong type, missing file). Exit code 2."""

    exit_code = 2


class DataError(SprayError):
    """The dataset cannot be read or has the wrong shape."""


class ModelError(SprayError):
    """The model cannot be built or loaded, or produces invalid output (NaN, wrong class count)."""


class ClassCountError(ModelError):
    """The checkpoint's last layer has another number of outputs than the model built for the data.

    Attributes
    ----------
    checkpoint_outputs, model_outputs : int
        The two class counts.
    """

    def __init__(self, message: str, checkpoint_outputs: int, model_outputs: int) -> None:
        super().__init__(message)
        self.checkpoint_outputs = checkpoint_outputs
        self.model_outputs = model_outputs


class UnsupportedLayerError(SprayError):
    """The model contains modules for which no LRP rule is known. Raised at setup, before any work."""


class LockedError(SprayError):
    """Another run holds the lock on this runs directory. Exit code 75 (EX_TEMPFAIL)."""

    exit_code = 75
