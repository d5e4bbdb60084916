"""recfound: one recommendation foundation model for embedding and generative tasks."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("recfound")
except PackageNotFoundError:  # imported from a source folder that was never pip-installed (a Ray job's working dir)
    __version__ = "0+unknown"
