"""fastmaps: high-performance data structures for Python, compiled with Cython.

* :class:`HashMap`: a drop-in ``dict`` replacement that resizes incrementally.
* :class:`SnapshotMap`: a mapping whose readers never take a lock (immutable snapshots).
* :class:`ObjectPool`: a ``sync.Pool``-style pool of reusable objects.
"""
from ._hashmap import HashMap
from ._pool import ObjectPool, PoolClosedError
from ._snapshot import Snapshot, SnapshotMap
from ._version import __version__

__all__ = ["HashMap", "ObjectPool", "PoolClosedError", "Snapshot", "SnapshotMap",
           "__version__"]
