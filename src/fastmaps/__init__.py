"""fastmaps: high-performance data structures for Python, compiled with Cython.

* :class:`HashMap`: a drop-in ``dict`` replacement that resizes incrementally.
"""
from ._hashmap import HashMap
from ._version import __version__

__all__ = ["HashMap", "__version__"]
