"""Exceptions of the training side, importable without loading torch."""


class ModelLoadError(RuntimeError):
    pass


class FetchError(RuntimeError):
    pass


class CheckpointMismatch(ValueError):
    """A run's checkpoint cannot resume under the present settings."""
