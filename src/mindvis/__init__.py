"""mindvis: MinD-Vis brain-to-image decoding as a reproducible pipeline."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("mindvis")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"
