"""SnapshotMap / Snapshot's own behaviour: snapshots and versions, batches, replace, the
atomics, hostile keys meeting the writer lock, references and memory, incremental
migration. Its dict compatibility is tested, with HashMap's, in test_dict_compat.py."""
import collections.abc
import copy
import gc
import pickle
import random
import sys
import threading
import tracemalloc
import weakref

import pytest

from fastmaps import Snapshot, SnapshotMap

from ._keys import HKey


class Val:
    """A weak-referenceable value."""

    def __init__(self, n=0):
        self.n = n

    def __repr__(self):
        return f"Val({self.n})"


# --------------------------------------------------------------------------- basics

def test_snapshot_is_a_read_only_mapping_with_dicts_reads():
    d = {f"k{i}": i for i in range(100)}
    s = SnapshotMap(d).snapshot()
    assert isinstance(s, collections.abc.Mapping)
    assert not isinstance(s, collections.abc.MutableMapping)
    assert len(s) == 100 and s == d and d == s
    assert s["k5"] == 5 and s.get("k5") == 5 and s.get("zz") is None and s.get("zz", 7) == 7
    assert "k99" in s and "k100" not in s
    assert list(s) == list(d) and list(reversed(s)) == list(reversed(d))
    assert list(s.keys()) == list(d.keys()) and list(s.values()) == list(d.values())
    assert list(s.items()) == list(d.items())
    assert s.keys() == d.keys() and s.items() == d.items()
    assert s.keys() & {"k1", "x"} == {"k1"}
    with pytest.raises(KeyError) as ei:
        s[(1, 2)]
    assert ei.value.args == ((1, 2),)
    for op in (lambda: s[[]], lambda: [] in s, lambda: s.get({})):
        with pytest.raises(TypeError):
            op()
    s._check(rehash=True)


def test_snapshot_constructor_forms():
    assert Snapshot() == {} and len(Snapshot()) == 0
    assert Snapshot([(1, 2), (3, 4)]) == {1: 2, 3: 4}
    assert Snapshot({1: 2}, a=3) == {1: 2, "a": 3}
    assert Snapshot(Snapshot({1: 2}), b=1) == {1: 2, "b": 1}
    assert Snapshot(SnapshotMap({1: 2})) == {1: 2}
    m = SnapshotMap()
    m.update(Snapshot({3: 3}))
    m |= Snapshot({4: 4})
    assert list(m.items()) == [(3, 3), (4, 4)]
    with pytest.raises(ValueError):
        Snapshot([(1, 2, 3)])
    with pytest.raises(TypeError):
        Snapshot([1])
    with pytest.raises(TypeError):
        Snapshot({[]: 1})


def test_snapshot_is_o1_immutable_and_versioned():
    m = SnapshotMap({"a": 1})
    v0 = m.version
    s0 = m.snapshot()
    assert m.snapshot() is s0                   # no writes: the very same object
    assert s0.version == v0
    m["b"] = 2
    assert m.version == v0 + 1 and m.snapshot().version == v0 + 1
    m["b"] = m["b"]                             # same object: nothing changes, no publish
    assert m.version == v0 + 1
    m.pop("zz", None)                           # no-op: no publish
    assert m.version == v0 + 1
    assert s0 == {"a": 1} and len(s0) == 1 and "b" not in s0
    with pytest.raises(TypeError):
        s0["x"] = 1
    with pytest.raises(TypeError):
        s0.__init__({"x": 1})
    assert s0.copy() is s0 and copy.copy(s0) is s0
    assert copy.deepcopy(s0) == s0


def test_snapshot_equality_hash_pickle():
    s = Snapshot({1: "a", "b": (1, 2)})
    assert s == {1: "a", "b": (1, 2)} and s != {1: "a"} and s != {1: "b", "b": (1, 2)}
    assert s == Snapshot({1.0: "a", "b": (1, 2)})
    assert hash(s) == hash(Snapshot({1.0: "a", "b": (1, 2)}))
    assert s != [1] and (s == 3) is False
    with pytest.raises(TypeError):
        hash(Snapshot({1: []}))
    with pytest.raises(TypeError):
        hash(SnapshotMap())
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        assert pickle.loads(pickle.dumps(s, proto)) == s
        m = SnapshotMap(s)
        m2 = pickle.loads(pickle.dumps(m, proto))
        assert type(m2) is SnapshotMap and m2 == m
    assert repr(Snapshot()) == "Snapshot()" and repr(Snapshot({1: 2})) == "Snapshot({1: 2})"
    m = SnapshotMap()
    m["self"] = m
    assert repr(m) == "SnapshotMap({'self': SnapshotMap({...})})"
    c = SnapshotMap({1: 2}).copy()
    assert c == {1: 2} and type(c) is SnapshotMap


def test_views_and_iterators_see_one_version():
    m = SnapshotMap({i: i for i in range(50)})
    keys, items, values = m.keys(), m.items(), m.values()
    it = iter(m)
    first = next(it)
    m.clear()
    m.update({i: -i for i in range(100, 120)})
    rest = [first] + list(it)
    assert rest == list(range(50))              # the iterator kept its version (and order)
    assert len(keys) == 50 and list(values) == list(range(50)) and (3, 3) in items
    assert it.__length_hint__() == 0


def test_items_tuple_reuse_is_safe():
    m = SnapshotMap({i: str(i) for i in range(100)})
    kept = [kv for kv in m.items()]              # caller keeps every tuple
    assert kept == [(i, str(i)) for i in range(100)]
    assert len({id(t) for t in kept}) == 100


def test_insertion_order_in_snapshots_batches_and_to_dict():
    m, d = SnapshotMap(), {}
    for k in ["b", "a", "c", 3, 1.5, "z"]:
        m[k] = d[k] = k
    m["a"] = d["a"] = "updated"                  # an update keeps the key's place
    del m["b"], d["b"]
    m["b"] = d["b"] = "back"                     # a re-inserted key goes to the end
    m.update([("c", 0), ("new", 1)])
    d.update([("c", 0), ("new", 1)])
    assert list(m.snapshot().to_dict().items()) == list(d.items())
    assert list(Snapshot(m.snapshot()).items()) == list(d.items())
    assert list(pickle.loads(pickle.dumps(m.snapshot())).items()) == list(d.items())
    assert repr(SnapshotMap({"x": 1, "a": 2})) == "SnapshotMap({'x': 1, 'a': 2})"
    assert m.popitem() == ("new", 1) and m.popitem() == ("b", "back")
    with m.batch() as b:
        b["q"] = 1
        assert b.popitem() == ("q", 1) and b.popitem() == ("z", "z")
    assert list(m) == ["a", "c", 3, 1.5]
    m._check(rehash=True)


def test_holes_are_compacted_and_memory_bounded():
    # delete most of a large map from the front (a FIFO cache): the log keeps no more
    # holes than live entries, iteration still skips them, and the order survives
    m = SnapshotMap({i: i for i in range(5000)})
    keep = m.snapshot()
    for i in range(4900):
        del m[i]
        if i % 500 == 0:
            m._check(rehash=True)
    assert list(m) == list(range(4900, 5000))
    m._check(rehash=True)
    for i in range(5000, 20000):                 # FIFO churn: insert new, delete oldest
        m[i] = i
        del m[i - 100]
    assert list(m) == list(range(19900, 20000))
    m._check(rehash=True)
    assert list(keep) == list(range(5000))       # the shared old version is intact
    keep._check(rehash=True)


def test_writes_in_place_only_when_unshared():
    m = SnapshotMap({i: i for i in range(100)})
    m[0] = "a"
    st = m._debug_stats()
    s = m.snapshot()                             # a held snapshot: writes must copy
    m[1] = "b"
    m[1000] = "c"
    del m[2]
    it = iter(m.items())                         # an iterator holds the version too
    m.popitem()
    assert s[1] == 1 and 1000 not in s and s[2] == 2 and len(s) == 100
    assert len(list(it)) == 100 and len(m) == 99 and 1000 not in m
    st2 = m._debug_stats()
    if not __import__("fastmaps._snapshot", fromlist=["x"]).FREE_THREADED_BUILD:
        assert st2["in_place"] == st["in_place"] + 2     # m[1000] = ..., del m[2]
        assert st2["copied"] == st["copied"] + 2         # m[1] = ... (s held), popitem (it held)
    m._check(rehash=True)
    s._check(rehash=True)


def test_deep_hash_paths_and_inlining():
    # keys sharing the low 55 bits force deep trie paths; deleting them must re-inline
    keys = [(i << 55) | 12345 for i in range(1, 300)] + [(i << 30) for i in range(1, 300)]
    m = SnapshotMap()
    for k in keys:
        m[k] = k
    m._check(rehash=True)
    rnd = random.Random(3)
    rnd.shuffle(keys)
    for i, k in enumerate(keys):
        del m[k]
        if i % 37 == 0:
            m._check(rehash=True)
    assert len(m) == 0
    m._check()


# --------------------------------------------------------------------------- bulk writes

def test_clear_replace_atomic():
    m = SnapshotMap({"a": 1})
    v = m.version
    m.clear()
    assert m == {} and m.version == v + 1
    m.clear()                                  # already empty: no publish
    assert m.version == v + 1
    prev = m.replace({"x": 1, "y": 2})
    assert prev == {} and isinstance(prev, Snapshot) and m == {"x": 1, "y": 2}
    s = Snapshot({"z": 0})
    prev = m.replace(s)
    assert prev == {"x": 1, "y": 2} and m == {"z": 0}
    assert m.snapshot() == s
    m.replace(q=1)
    assert m == {"q": 1}
    m._check()


def test_batch_publishes_together_and_discards_on_error():
    m = SnapshotMap({"a": 1, "b": 2})
    v = m.version
    with m.batch() as b:
        b["c"] = 3
        del b["a"]
        b.update({"d": 4}, e=5)
        assert b["c"] == 3 and "a" not in b and len(b) == 4 and b.get("d") == 4
        assert sorted(b) == ["b", "c", "d", "e"]
        assert m == {"a": 1, "b": 2}            # not published yet
        assert b.pop("e") == 5 and b.setdefault("b", 9) == 2
        s = b.snapshot()
        b["f"] = 6                              # after a snapshot: copy, not in place
        assert "f" not in s and s == {"b": 2, "c": 3, "d": 4}
    assert m == {"b": 2, "c": 3, "d": 4, "f": 6} and m.version == v + 1
    m._check()
    with pytest.raises(ZeroDivisionError):
        with m.batch() as b:
            b.clear()
            b["zz"] = 1
            1 / 0
    assert m == {"b": 2, "c": 3, "d": 4, "f": 6} and m.version == v + 1
    with m.batch() as b:                       # no writes: no publish
        b.get("b")
    assert m.version == v + 1
    with pytest.raises(RuntimeError):
        b["late"] = 1                          # outside its block
    with pytest.raises(RuntimeError):
        b.__enter__()
    m._check()


def test_batch_large_transient_and_pop_all():
    m = SnapshotMap({i: i for i in range(500)})
    keep = m.snapshot()
    with m.batch() as b:
        for i in range(5000):
            b[i] = -i
        for i in range(0, 5000, 3):
            del b[i]
        while len(b) > 100:
            b.popitem()
        b.snapshot()._check(rehash=True)
    assert len(m) == 100
    m._check(rehash=True)
    keep._check(rehash=True)
    assert keep == {i: i for i in range(500)}   # the shared old version is intact


def test_batch_inside_batch_and_direct_write_raise():
    m = SnapshotMap()
    with m.batch() as b:
        with pytest.raises(RuntimeError):
            m["x"] = 1
        with pytest.raises(RuntimeError):
            with m.batch():
                pass
        with pytest.raises(RuntimeError):
            m.replace({})
        b["ok"] = 1
        assert m.get("ok") is None               # the map still shows the published version
    assert m == {"ok": 1}
    m["after"] = 2                               # lock released
    assert m["after"] == 2


def test_batch_from_other_thread_raises():
    m = SnapshotMap()
    errors = []
    with m.batch() as b:
        def use():
            try:
                b["x"] = 1
            except RuntimeError as e:
                errors.append(e)
        t = threading.Thread(target=use)
        t.start()
        t.join(10)
    assert len(errors) == 1 and "x" not in m


def test_abandoned_batch_releases_lock():
    m = SnapshotMap()

    def gen():
        with m.batch() as b:
            b["x"] = 1
            yield

    g = gen()
    next(g)
    del g                                       # generator close -> GeneratorExit -> discard
    gc.collect()
    m["y"] = 2
    assert m == {"y": 2}


# --------------------------------------------------------------------------- atomics

def test_atomics_return_values():
    m = SnapshotMap()
    assert m.load_or_store("k", 1) == (1, False)
    assert m.load_or_store("k", 2) == (1, True)
    assert m.swap("k", 3) == (1, True)
    assert m.swap("n", 4) == (None, False) and m["n"] == 4
    assert m.load_and_delete("n") == (4, True)
    assert m.load_and_delete("n") == (None, False)
    assert m.compare_and_swap("k", 3, 5) is True and m["k"] == 5
    assert m.compare_and_swap("k", 3, 6) is False and m["k"] == 5
    assert m.compare_and_swap("missing", None, 1) is False and "missing" not in m
    assert m.compare_and_delete("k", 4) is False
    assert m.compare_and_delete("k", 5.0) is True and "k" not in m   # == comparison
    assert m.compare_and_delete("k", 5) is False
    nan = float("nan")
    m["n"] = nan
    assert m.compare_and_swap("n", nan, 1) is True     # identity first
    assert m.compare_and_swap("n", float("nan"), 2) is False


def test_cas_value_eq_raising_leaves_map_unchanged():
    class Bad:
        def __eq__(self, other):
            raise ValueError("eq")
    m = SnapshotMap({"k": Bad()})
    v = m.version
    with pytest.raises(ValueError):
        m.compare_and_swap("k", object(), 1)
    with pytest.raises(ValueError):
        m.compare_and_delete("k", object())
    assert m.version == v and "k" in m
    m["z"] = 1                                   # lock was released


# --------------------------------------------------------------------------- hostile keys

def test_full_hash_collisions_use_collision_nodes():
    keys = [HKey(i, 42) for i in range(200)]
    m = SnapshotMap()
    for k in keys:
        m[k] = k.ident
    m._check(rehash=True)
    assert len(m) == 200 and all(m[HKey(i, 42)] == i for i in range(200))
    assert HKey(500, 42) not in m
    other = HKey(1000, 42 + (1 << 40))           # same low bits, different hash
    m[other] = "o"
    m[HKey(1001, 42 + 32)] = "p"                 # diverges at the second level
    m._check(rehash=True)
    snap = m.snapshot()
    for i in range(0, 200, 2):
        del m[HKey(i, 42)]
    m._check(rehash=True)
    assert len(m) == 102 and snap[HKey(0, 42)] == 0
    for i in range(1, 199, 2):
        del m[HKey(i, 42)]
    m._check(rehash=True)
    assert m == {HKey(199, 42): 199, other: "o", HKey(1001, 74): "p"}
    with m.batch() as b:                         # transient path through collision nodes
        for i in range(50):
            b[HKey(i, 7)] = i
        for i in range(0, 50, 2):
            del b[HKey(i, 7)]
    m._check(rehash=True)
    assert len(m) == 28


def test_raising_hash_and_eq():
    class BadHash:
        def __hash__(self):
            raise ValueError("hash")

    class BadEq(HKey):
        __hash__ = HKey.__hash__

        def __eq__(self, other):
            raise KeyError("eq")                 # even KeyError must propagate unchanged

    m = SnapshotMap({HKey(1, 5): 1})
    v = m.version
    for op in (lambda: m.__setitem__(BadHash(), 1), lambda: m[BadHash()],
               lambda: BadHash() in m, lambda: m.pop(BadHash(), None)):
        with pytest.raises(ValueError):
            op()
    bad = BadEq(2, 5)
    for op in (lambda: m.__setitem__(bad, 1), lambda: m[bad], lambda: bad in m,
               lambda: m.pop(bad, None), lambda: m.load_or_store(bad, 1),
               lambda: m.update({bad: 1})):
        with pytest.raises(KeyError, match="eq"):
            op()
    assert m.version == v and m == {HKey(1, 5): 1}
    m._check()
    with m.batch() as b:                         # batch survives a failed op
        b["x"] = 1
        with pytest.raises(KeyError):
            b[bad] = 2
        with pytest.raises(KeyError):
            b.update([("y", 1), (bad, 2), ("z", 3)])
        assert "y" in b and "z" not in b          # like dict.update: applied up to the error
    assert m == {HKey(1, 5): 1, "x": 1, "y": 1}
    m._check()


def test_reentrant_eq_writing_during_write_raises_no_deadlock():
    m = SnapshotMap()
    seen = []

    class Reentrant(HKey):
        __hash__ = HKey.__hash__

        def __eq__(self, other):
            try:
                m["inner"] = 1
            except RuntimeError as e:
                seen.append(e)
                raise
            return super().__eq__(other)

    m[HKey(1, 9)] = "a"
    with pytest.raises(RuntimeError, match="re-entrant"):
        m[Reentrant(2, 9)] = "b"
    assert m == {HKey(1, 9): "a"} and len(seen) == 1
    m["after"] = 1                               # not deadlocked, lock released
    m._check()


def test_reentrant_eq_swallowing_error_still_consistent():
    m = SnapshotMap()

    class Sneaky(HKey):
        __hash__ = HKey.__hash__

        def __eq__(self, other):
            try:
                del m[HKey(1, 9)]
            except RuntimeError:
                pass
            return super().__eq__(other)

    m[HKey(1, 9)] = "a"
    m[Sneaky(1, 9)] = "b"                        # equal: replaces the value, keeps key
    assert m[HKey(1, 9)] == "b" and type(next(iter(m))) is HKey
    m._check()


def test_reentrant_eq_during_read_may_write():
    m = SnapshotMap()

    class Writer(HKey):
        __hash__ = HKey.__hash__

        def __eq__(self, other):
            m["written"] = len(m)                # readers hold no lock: allowed
            return super().__eq__(other)

    m[HKey(1, 3)] = "a"
    assert m.get(Writer(1, 3)) == "a"
    assert Writer(2, 3) not in m
    assert m["written"] == 2


def test_reentrant_hash_may_write():
    m = SnapshotMap()

    class HashWriter:
        def __hash__(self):
            m["from_hash"] = 1                   # hashing happens before the lock
            return 1

    m[HashWriter()] = 2
    assert m["from_hash"] == 1 and len(m) == 2


def test_reentrant_eq_in_batch_raises():
    m = SnapshotMap()

    class BatchWriter(HKey):
        __hash__ = HKey.__hash__

        b = None

        def __eq__(self, other):
            BatchWriter.b["inner"] = 1
            return super().__eq__(other)

    with m.batch() as b:
        BatchWriter.b = b
        b[HKey(1, 4)] = 1
        with pytest.raises(RuntimeError):
            b[BatchWriter(2, 4)] = 2
        with pytest.raises(RuntimeError):
            b.get(BatchWriter(2, 4))
        assert len(b) == 1
    assert m == {HKey(1, 4): 1}


def test_value_eq_writing_during_cas_raises():
    m = SnapshotMap()

    class V:
        def __eq__(self, other):
            m["x"] = 1
            return True

    m["k"] = V()
    with pytest.raises(RuntimeError):
        m.compare_and_swap("k", object(), 1)
    m["y"] = 2
    assert "x" not in m


# --------------------------------------------------------------------------- references / memory

def test_old_versions_freed_when_unreferenced():
    m = SnapshotMap()
    v1 = Val(1)
    r = weakref.ref(v1)
    m["a"] = v1
    del v1
    s = m.snapshot()
    m["a"] = Val(2)
    assert r() is not None                       # held by the snapshot
    del s
    assert r() is None                           # freed with the old version
    v3 = Val(3)
    r3 = weakref.ref(v3)
    m["b"] = v3
    del v3
    it = iter(m.items())
    m.clear()
    assert r3() is not None
    del it
    assert r3() is None
    v4 = Val(4)
    r4 = weakref.ref(v4)
    m.replace({"c": v4})
    del v4
    prev = m.replace({})
    assert r4() is not None and prev["c"].n == 4
    del prev
    assert r4() is None


def test_retired_versions_reclaimed_after_readers_leave():
    m = SnapshotMap()
    v = Val()
    r = weakref.ref(v)
    m["a"] = v
    del v
    m._debug_hold_readers(1)                     # a reader "inside the load window"
    m["a"] = 0
    assert m._debug_retired() == 1 and r() is not None
    m["b"] = 1
    assert m._debug_retired() == 2 and r() is not None
    m._debug_hold_readers(-1)
    m["c"] = 2                                   # next writer sees no readers: reclaims
    assert m._debug_retired() == 0 and r() is None


def test_refcounts_stable():
    key, val = object(), object()
    k0, v0 = sys.getrefcount(key), sys.getrefcount(val)
    m = SnapshotMap()
    for i in range(100):
        m[key] = val
        m[i] = val
        with m.batch() as b:
            b[key] = i
            b[key] = val
            b.pop(i)
        s = m.snapshot()
        m.compare_and_swap(key, val, val)
        m.swap(key, val)
        m.load_or_store(key, 1)
        list(s.items())
        del s
    assert m == {key: val}
    del m, b                                     # a finished batch still references its map
    gc.collect()
    assert sys.getrefcount(key) == k0 and sys.getrefcount(val) == v0


def test_memory_does_not_grow_with_overwrites():
    vals = [Val(i) for i in range(64)]
    m = SnapshotMap({i: vals[0] for i in range(2000)})
    rnd = random.Random(1)
    tracemalloc.start()
    try:
        for i in range(20000):                   # steady state: every node re-allocated
            m[rnd.randrange(2000)] = vals[i % 64]
        gc.collect()
        first = tracemalloc.get_traced_memory()[0]
        for i in range(20000):
            m[rnd.randrange(2000)] = vals[i % 64]
        gc.collect()
        second = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert first > 0 and abs(second - first) < 16 * 1024, (first, second)


def test_cycles_through_map_are_collected():
    m = SnapshotMap()
    m["self"] = m
    m["snap"] = Val()
    r = weakref.ref(m)
    rv = weakref.ref(m["snap"])
    del m
    gc.collect()
    assert r() is None and rv() is None
    s_holder = Val()
    s = Snapshot({"holder": s_holder})
    s_holder.snap = s
    rs = weakref.ref(s_holder)
    del s, s_holder
    gc.collect()
    assert rs() is None


def test_deeply_nested_snapshots_dealloc():
    s = Snapshot()
    for i in range(100000):
        s = Snapshot({"x": s})
    del s                                        # trashcan: no C stack overflow


# ------------------------------------------------------------ incremental migration

from fastmaps import _snapshot  # noqa: E402


def test_set_tuning_validates_and_restores():
    prev = _snapshot._set_tuning()
    assert set(prev) == {"step", "sync_below"}
    with pytest.raises(ValueError):
        _snapshot._set_tuning(step=1)
    assert _snapshot._set_tuning(**prev) == prev


def test_growth_migrates_incrementally(tiny):
    # inserts that cross the index's 2/3 fill start a migration; reads, snapshots and the
    # order stay exact while two indexes are in use
    m, d = SnapshotMap(), {}
    snaps, seen = [], 0
    for i in range(3000):
        k = i * 7919 if i % 3 else f"k{i}"
        m[k] = d[k] = i
        migrating = m._debug_stats()["migrating"]
        seen += migrating
        if migrating and i % 41 == 0:
            snaps.append((m.snapshot(), list(d.items())))
            assert all(m[x] == d[x] for x in list(d)[:: max(1, len(d) // 50)])
            assert (-1 in m) is False and m.get("absent") is None
            m._check(rehash=True)
    assert seen > 100                                      # it really ran over many writes
    assert list(m.items()) == list(d.items())
    for s, items in snaps:
        s._check(rehash=True)
        assert list(s.items()) == items


def test_compaction_moves_records_incrementally(tiny):
    # deleting the oldest keys (a FIFO) starts a compacting migration; updates, deletes,
    # popitem and re-inserts during it keep dict's order, and held snapshots never change
    m = SnapshotMap({i: i for i in range(4000)})
    d = dict(m.snapshot().to_dict())
    snaps, seen = [], 0
    rnd = random.Random(7)
    for i in range(3600):
        del m[i], d[i]
        if m._debug_stats()["migrating"]:
            seen += 1
            r = rnd.random()
            k = rnd.choice(list(d)[-50:])
            if r < 0.2:
                m[k] = d[k] = -i                           # update in place
            elif r < 0.3:
                del m[k], d[k]
                m[k] = d[k] = i                            # re-insert goes to the end
            elif r < 0.35:
                assert m.popitem() == d.popitem()          # LIFO across the gap
            if i % 29 == 0:
                snaps.append((m.snapshot(), list(d.items())))
                m._check(rehash=True)
    assert seen > 100
    m._check(rehash=True)
    assert list(m.items()) == list(d.items())
    assert not m._debug_stats()["migrating"] or len(m) > 0
    for s, items in snaps:
        s._check(rehash=True)
        assert list(s.items()) == items


def test_trim_of_a_long_run_of_trailing_holes(tuning):
    # deleting a long stretch at the end of the log but its last record, then that record:
    # the log is trimmed to the last live record (found through the pages' live counts),
    # popitem stays LIFO, and a snapshot taken before the trim keeps its contents
    n = 5000
    m = SnapshotMap({i: i for i in range(n)})
    d = dict(m.snapshot().to_dict())
    for i in range(0, n // 3, 2):                 # holes at the front as well
        del m[i], d[i]
    for i in range(n // 2, n - 1):
        del m[i], d[i]
    m._check(rehash=True)
    held = m.snapshot()
    held_items = list(d.items())
    del m[n - 1], d[n - 1]
    m._check(rehash=True)
    for _ in range(50):
        assert m.popitem() == d.popitem()
    m[-1] = d[-1] = "new"                         # appended right after the trim point
    assert list(m.items()) == list(d.items())
    m._check(rehash=True)
    held._check(rehash=True)
    assert list(held.items()) == held_items


@pytest.mark.parametrize("n", [1, 5, 300, 3000])
def test_churn_keeps_log_positions_inside_the_slot_field(tuning, n):
    # index slots hold tag | log position, with a position field sized when the index
    # is made; one-key churn (the same key deleted and re-inserted) and FIFO churn (new
    # key in, oldest out) append forever at constant size: compaction must keep every
    # position inside the field without the insert's safety valve (a forced finish)
    forced = _snapshot._forced_finishes()
    d = {i: i for i in range(n)}
    d[-1] = "churned"
    m = SnapshotMap(d)
    for i in range(6000):
        del m[-1], d[-1]                  # re-inserted at once: never the oldest
        m[-1] = d[-1] = i
        m[n + i] = d[n + i] = i
        oldest = next(iter(d))
        del m[oldest], d[oldest]
        if i % 397 == 0:
            m._check(rehash=True)
    m._check(rehash=True)
    assert list(m.items()) == list(d.items())
    assert _snapshot._forced_finishes() == forced


def test_popitem_empties_the_map_during_migration(tiny):
    m = SnapshotMap({i: i for i in range(600)})
    d = dict.fromkeys(range(600))
    for i in [i for i in range(600) if i % 3]:
        del m[i], d[i]                                     # holes everywhere
        if m._debug_stats()["migrating"]:
            break
    assert m._debug_stats()["migrating"]
    d = {k: k for k in d}
    while d:
        assert m.popitem() == d.popitem()
        if len(d) % 37 == 0:
            m._check(rehash=True)
    assert len(m) == 0 and not m._debug_stats()["migrating"]
    m._check()
    m[1] = 1
    assert list(m.items()) == [(1, 1)]


def test_batch_and_update_during_migration(tiny):
    m = SnapshotMap({i: i for i in range(2000)})
    for i in range(1200):
        del m[i]
    assert m._debug_stats()["migrating"]
    d = {i: i for i in range(1200, 2000)}
    with m.batch() as b:                                   # a private copy of the version
        for i in range(1200, 1300):
            del b[i]
            del d[i]
        b.update({i: -i for i in range(5000, 5100)})
        d.update({i: -i for i in range(5000, 5100)})
        b.snapshot()._check(rehash=True)
        assert list(b.items()) == list(d.items())
    m.update({i: 0 for i in range(1900, 1950)})            # small bulk: incremental
    d.update({i: 0 for i in range(1900, 1950)})
    m._check(rehash=True)
    assert list(m.items()) == list(d.items())


def test_hostile_eq_during_migration(tiny):
    # a raising __eq__ met in the old index leaves the map unchanged; a re-entrant write
    # is refused as before
    state = {"mode": None}

    class BKey:
        def __init__(self, i):
            self.i = i

        def __hash__(self):
            return 5

        def __eq__(self, other):
            if state["mode"] == "raise":
                raise ZeroDivisionError
            if state["mode"] == "write":
                m["x"] = 1
            return isinstance(other, BKey) and self.i == other.i

    m = SnapshotMap()
    for i in range(300):
        m[BKey(i)] = i                                     # one long probe chain
    for i in range(300, 3000):
        m[i] = i
        if m._debug_stats()["migrating"] and i > 1000:
            break
    assert m._debug_stats()["migrating"]
    before = list(m.items())
    for mode, exc in (("raise", ZeroDivisionError), ("write", RuntimeError)):
        state["mode"] = mode
        with pytest.raises(exc):
            m[BKey(-1)] = 1
        if mode == "raise":
            with pytest.raises(exc):
                BKey(-2) in m
        state["mode"] = None
        assert list(m.items()) == before
        m._check(rehash=True)


def test_default_tuning_large_map_migrates_incrementally():
    # with the default tuning a map past sync_below migrates over many writes and no
    # single write rebuilds the index
    m = SnapshotMap()
    seen = 0
    for i in range(20000):
        m[i] = i
        seen += m._debug_stats()["migrating"]
    assert seen > 500
    for i in range(15000):
        del m[i]
        seen += m._debug_stats()["migrating"]
    m._check(rehash=True)
    assert list(m) == list(range(15000, 20000))
    assert _snapshot._forced_finishes() == 0


def test_dropped_old_index_is_released_over_later_writes():
    # the old index of a large map is not freed in the write that ends the migration:
    # its pages are queued and released a few per write, and the queue drains
    m = SnapshotMap()
    queued = 0
    for i in range(200000):
        m[i] = i
        queued = max(queued, _snapshot._pending_teardown())
    assert queued > 0
    for i in range(5000):
        m[i] = -i
    assert _snapshot._pending_teardown() == 0
    m._check()
