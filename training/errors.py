"""Exceptions of the training side, importable without loading torch."""


class ModelLoadError(RuntimeError):
    pass


class FetchError(RuntimeError):
    pass
