from ._hashmap import HashMap as HashMap
from ._snapshot import Snapshot as Snapshot, SnapshotMap as SnapshotMap

__version__: str
__all__ = ["HashMap", "Snapshot", "SnapshotMap", "__version__"]
