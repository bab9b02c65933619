"""dstbench: does dynamic sparse training make vision models more robust to corruptions?"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dstbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
