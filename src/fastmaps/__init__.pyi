from ._hashmap import HashMap as HashMap
from ._pool import ObjectPool as ObjectPool, PoolClosedError as PoolClosedError
from ._snapshot import Snapshot as Snapshot, SnapshotMap as SnapshotMap

__version__: str
__all__ = ["HashMap", "ObjectPool", "PoolClosedError", "Snapshot", "SnapshotMap",
           "__version__"]
