"""Exceptions of the training side, importable without loading torch."""


class ModelLoadError(RuntimeError):
    pass


class FetchError(RuntimeError):
    pass


class CheckpointMismatch(ValueError):
    """A run's checkpoint cannot resume under the present settings."""


class UsageError(ValueError):
    """A request that cannot be carried out as given (an unknown version, no data yet); the
    message says what to do instead."""


class ArtifactError(RuntimeError):
    """An artifact that could not be written (a full disk, a read-only folder, ...). The message
    names the artifact's folder and the cause, which the serializers' own errors often do not
    (safetensors and tokenizers report a full disk without a path)."""
