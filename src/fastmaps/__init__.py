"""fastmaps: high-performance data structures for Python, compiled with Cython.

* :class:`HashMap`: a drop-in ``dict`` replacement that resizes incrementally.
* :class:`ObjectPool`: reuse expensive objects (per-thread cache, GC release, bounds).
"""
from ._version import __version__
from ._pool import ObjectPool, PoolClosedError

__all__ = ["__version__", "ObjectPool", "PoolClosedError"]
