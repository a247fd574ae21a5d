"""The tunings the tests run the structures under, defined once.

``tuned(name)`` sets the named tuning for the block and restores the previous settings
afterwards; conftest.py's fixtures (``tiny``, ``prefault``, ``tuning``) are built on it,
and the fuzz driver uses it directly.

* ``default``: the shipped settings.
* ``tiny``: migrations run all the time. HashMap: 2 log positions per write, no
  synchronous small-map migrations, 4-entry log segments. SnapshotMap: 2 log positions
  per write, every migration incremental (and, on leaving, no forced finish happened:
  the sizing never lets the old index fill up).
* ``prefault``: ``tiny``, and every HashMap index counts as large: migrations populate
  their new index a few bytes per write before their first step, and the next index is
  prepared and populated ahead of each migration.
"""
import contextlib

TUNINGS = {
    "default": {"hashmap": {}, "snapshot": {}},
    "tiny": {"hashmap": dict(step=2, sync_below=0, seg_shift=2),
             "snapshot": dict(step=2, sync_below=0)},
    "prefault": {"hashmap": dict(step=2, sync_below=0, seg_shift=2, prefault_min=32,
                                 prefault_chunk=8, pre_every=1),
                 "snapshot": dict(step=2, sync_below=0)},
}


@contextlib.contextmanager
def tuned(name="tiny", *, hashmap=None, snapshot=None):
    """Run the block under TUNINGS[name], with `hashmap` / `snapshot` settings (dicts of
    _set_tuning arguments) overriding it; restore the previous settings afterwards."""
    from fastmaps import _hashmap, _snapshot
    hm = {**TUNINGS[name]["hashmap"], **(hashmap or {})}
    sm = {**TUNINGS[name]["snapshot"], **(snapshot or {})}
    prev_hm = _hashmap._set_tuning(**hm)
    try:
        prev_sm = _snapshot._set_tuning(**sm)
    except BaseException:
        _hashmap._set_tuning(**prev_hm)
        raise
    forced = _snapshot._forced_finishes()
    try:
        yield name
    finally:
        _snapshot._set_tuning(**prev_sm)
        _hashmap._set_tuning(**prev_hm)
    if sm.get("sync_below", 1) == 0:
        # an incremental SnapshotMap migration never needs its safety valve
        assert _snapshot._forced_finishes() == forced, "a SnapshotMap migration was forced"
