"""fastmaps: high-performance data structures for Python, compiled with Cython.

* :class:`HashMap`: a drop-in ``dict`` replacement that resizes incrementally.
* :class:`SnapshotMap`: a mapping whose readers never take a lock (immutable snapshots).
"""
from ._hashmap import HashMap
from ._snapshot import Snapshot, SnapshotMap
from ._version import __version__

__all__ = ["HashMap", "Snapshot", "SnapshotMap", "__version__"]
