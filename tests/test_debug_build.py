"""The debug build (FASTMAPS_DEBUG=1): every mutating call ends with the structure's
invariant checker, on the schedule of fm_dbg_due (src/fastmaps/fm_common.h): after every
call while the checker's cost is at most FM_DBG_ALWAYS, otherwise after a sample of calls
and always after a HashMap migration starts or finishes. A release build runs none.

``_debug_checks()`` (one per module) counts the checks this thread has run.
"""
import gc
import os

import pytest

from fastmaps import HashMap, ObjectPool, Snapshot, SnapshotMap
from fastmaps import _hashmap, _pool, _snapshot

DEBUG = _hashmap.DEBUG_BUILD
ONE = 1 if DEBUG else 0         # checks expected after one mutating call


def test_every_module_is_built_the_same_way():
    assert _hashmap.DEBUG_BUILD == _snapshot.DEBUG_BUILD == _pool.DEBUG_BUILD
    assert isinstance(DEBUG, bool)
    # .ci/run's debug stage sets this, so that a release build slipping in fails there
    expect = os.environ.get("FASTMAPS_EXPECT_DEBUG")
    if expect is not None:
        assert DEBUG == (expect == "1")


def checks(module, call):
    before = module._debug_checks()
    call()
    return module._debug_checks() - before


HASHMAP_CALLS = {
    "setitem": lambda m: m.__setitem__("z", 0),
    "setitem existing": lambda m: m.__setitem__("a", 0),
    "delitem": lambda m: m.__delitem__("a"),
    "pop": lambda m: m.pop("a"),
    "popitem": lambda m: m.popitem(),
    "setdefault": lambda m: m.setdefault("z", 0),
    "update": lambda m: m.update({"z": 0}, y=1),
    "ior": lambda m: m.__ior__({"z": 0}),
    "clear": lambda m: m.clear(),
    "clear keep_capacity": lambda m: m.clear(keep_capacity=True),
    "reserve": lambda m: m.reserve(1000),
    "shrink_to_fit": lambda m: m.shrink_to_fit(),
}


@pytest.mark.parametrize("name", HASHMAP_CALLS)
def test_hashmap_mutating_call_runs_the_checker_once(name):
    m = HashMap(a=1, b=2, c=3)
    assert checks(_hashmap, lambda: HASHMAP_CALLS[name](m)) == ONE
    m._check()


def test_hashmap_new_maps_are_checked():
    assert checks(_hashmap, lambda: HashMap(a=1)) == ONE
    m = HashMap(a=1)
    assert checks(_hashmap, m.copy) == ONE
    assert checks(_hashmap, lambda: HashMap.fromkeys("abc")) == 2 * ONE   # __init__, then the keys
    assert checks(_hashmap, lambda: HashMap.with_capacity(10)) == 2 * ONE


def test_hashmap_large_map_is_sampled_and_checked_at_migration_start():
    m = HashMap.fromkeys(range(20_000))          # checker cost ~ 85,000: sampled
    before = _hashmap._debug_checks()
    for i in range(20_000):
        m[i] = i                                 # value updates: no migration starts
    sampled = _hashmap._debug_checks() - before
    if DEBUG:
        assert 1 <= sampled <= 40, sampled      # about 20,000 / 4096
    else:
        assert sampled == 0
    migrations = m._progress()[2]
    k = 20_000
    while m._progress()[2] == migrations:
        n = checks(_hashmap, lambda: m.__setitem__(k, k))
        k += 1
    assert n == ONE                              # the insert that started the migration


PREBUILT = Snapshot(z=0)
SNAPSHOT_CALLS = {
    "setitem": lambda m: m.__setitem__("z", 0),
    "delitem": lambda m: m.__delitem__("a"),
    "pop": lambda m: m.pop("a"),
    "popitem": lambda m: m.popitem(),
    "setdefault": lambda m: m.setdefault("z", 0),
    "update": lambda m: m.update({"z": 0}, y=1),
    "ior": lambda m: m.__ior__({"z": 0}),
    "clear": lambda m: m.clear(),
    "replace": lambda m: m.replace(PREBUILT),   # (building a Snapshot is checked too)
    "load_or_store": lambda m: m.load_or_store("z", 0),
    "load_and_delete": lambda m: m.load_and_delete("a"),
    "swap": lambda m: m.swap("a", 0),
    "compare_and_swap": lambda m: m.compare_and_swap("a", 1, 0),
    "compare_and_delete": lambda m: m.compare_and_delete("a", 1),
}


@pytest.mark.parametrize("name", SNAPSHOT_CALLS)
def test_snapshotmap_mutating_call_runs_the_checker_once(name):
    m = SnapshotMap(a=1, b=2, c=3)
    assert checks(_snapshot, lambda: SNAPSHOT_CALLS[name](m)) == ONE
    m._check()


def test_snapshot_construction_and_new_maps_are_checked():
    assert checks(_snapshot, lambda: Snapshot(a=1)) == ONE
    assert checks(_snapshot, lambda: SnapshotMap(a=1)) == 2 * ONE   # its Snapshot, the map
    m = SnapshotMap(a=1)
    assert checks(_snapshot, m.copy) == 2 * ONE      # the empty SnapshotMap(), the copy


BATCH_CALLS = {
    "setitem": lambda b: b.__setitem__("z", 0),
    "delitem": lambda b: b.__delitem__("a"),
    "pop": lambda b: b.pop("a"),
    "popitem": lambda b: b.popitem(),
    "setdefault": lambda b: b.setdefault("z", 0),
    "update": lambda b: b.update({"z": 0}, y=1),
    "clear": lambda b: b.clear(),
}


@pytest.mark.parametrize("name", BATCH_CALLS)
def test_batch_mutating_call_runs_the_checker_once(name):
    m = SnapshotMap(a=1, b=2, c=3)
    with m.batch() as b:
        assert checks(_snapshot, lambda: BATCH_CALLS[name](b)) == ONE
        before = _snapshot._debug_checks()
    assert _snapshot._debug_checks() - before == ONE      # the publishing exit
    m._check()


POOL_CALLS = {
    "get": lambda p, o: p.get(),
    "get timeout": lambda p, o: p.get(timeout=None),
    "put": lambda p, o: p.put(o),
    "discard": lambda p, o: p.discard(o),
    "prefill": lambda p, o: p.prefill(3),
    "clear": lambda p, o: p.clear(),
    "close": lambda p, o: p.close(),
}


@pytest.mark.parametrize("name", POOL_CALLS)
def test_pool_mutating_call_runs_the_checker_once(name):
    pool = ObjectPool(list, gc_release=False)
    obj = pool.get()
    assert checks(_pool, lambda: POOL_CALLS[name](pool, obj)) == ONE
    pool._check()


def test_pool_lease_and_gc_rotation_are_checked():
    pool = ObjectPool(list)
    lease = pool.borrow()
    assert checks(_pool, lease.__enter__) == ONE
    assert checks(_pool, lambda: lease.__exit__(None, None, None)) == ONE
    # a full collection rotates the victim tier of every registered pool (this one too)
    assert checks(_pool, lambda: gc.collect()) >= ONE
    pool.close()
