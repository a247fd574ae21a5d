"""fastmaps: high-performance data structures for Python, compiled with Cython.

* :class:`HashMap`: a drop-in ``dict`` replacement that resizes incrementally.
"""
from ._version import __version__

__all__ = ["__version__"]
