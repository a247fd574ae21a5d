"""SnapshotMap bulk writes (update, SnapshotMap(...), Snapshot(...), a batch's update):
the one-pass path (_collect_buf + fm_bulk_store) and the item-by-item path it falls back
to, against dict, with hostile input."""
import gc
import sys

import pytest

from fastmaps import Snapshot, SnapshotMap

from ._tuning import tuned


def _items(m):
    return list(m.items())


def _sources(n):
    pairs = [(i * 7919 % 100003, i) for i in range(n)]
    strs = [(f"k{i}", i) for i in range(n)]
    yield pairs
    yield strs
    yield pairs + pairs[: n // 2]                      # repeated keys: last value wins
    yield [(i, i) for i in range(n)] + [(float(i), -i) for i in range(0, n, 3)]  # 1 == 1.0
    yield [(True, 1), (1, 2), (1.0, 3), (0, 4), (False, 5)]


@pytest.mark.parametrize("n", [0, 1, 5, 40, 700, 3000])
def test_update_from_every_source_matches_dict(n):
    for pairs in _sources(n):
        d = dict(pairs)
        for src in (d, pairs, tuple(pairs), iter(pairs), Snapshot(pairs), SnapshotMap(pairs),
                    type("Sub", (dict,), {})(pairs)):
            for base in ({}, {0: "x", "k1": "y", 99999: "z"}, dict(pairs[::5])):
                if not isinstance(src, (dict, tuple, list, Snapshot, SnapshotMap)):
                    src = iter(pairs)
                want = dict(base)
                want.update(dict(pairs))
                m = SnapshotMap(base)
                m.update(src)
                assert _items(m) == list(want.items())
                assert [type(k) for k in m] == [type(k) for k in want]
                m._check(rehash=True)
        assert _items(SnapshotMap(pairs)) == list(d.items())
        assert _items(Snapshot(pairs)) == list(d.items())
        assert _items(SnapshotMap(pairs, extra=1)) == list(dict(pairs, extra=1).items())


def test_small_update_into_a_large_map_goes_item_by_item():
    m = SnapshotMap((i, i) for i in range(5000))
    d = dict((i, i) for i in range(5000))
    for start in range(5000, 8000, 300):      # small relative to the map: no rebuild
        upd = {i: -i for i in range(start - 100, start + 200)}
        m.update(upd)
        d.update(upd)
        assert _items(m) == list(d.items())
    m._check(rehash=True)


class MutHash:
    """A key whose __hash__ runs `hook` (during the collection, before the lock)."""

    hook = None

    def __init__(self, ident):
        self.ident = ident

    def __hash__(self):
        if MutHash.hook is not None:
            MutHash.hook(self)
        return hash(self.ident)

    def __eq__(self, other):
        return isinstance(other, MutHash) and other.ident == self.ident

    def __repr__(self):
        return f"MutHash({self.ident})"


@pytest.fixture(autouse=True)
def _no_hook():
    yield
    MutHash.hook = None


def test_source_dict_changed_by_a_key_hash_yields_no_duplicates():
    # a key's __hash__ deletes an already-read key from the source and re-inserts it (size
    # unchanged: the dict's iteration sees it again); the keys are not exact str/int, so
    # they are looked up, not appended as known-distinct.  (Where the dict's stored hashes
    # are read, as dict.update reads them, no __hash__ runs at all: CPython < 3.13.)
    keys = [MutHash(i) for i in range(60)]
    src = {k: k.ident for k in keys}
    done = []

    def hook(k):
        if k.ident == 30 and not done:
            done.append(1)
            v = src.pop(keys[3])
            src[keys[3]] = v

    MutHash.hook = hook
    m = SnapshotMap()
    m.update(src)
    MutHash.hook = None
    assert len(m) == len(set(m)) == 60
    assert dict(m) == src
    m._check(rehash=True)


def test_source_dict_resized_by_a_key_hash_raises_like_dict_iteration():
    keys = [MutHash(i) for i in range(20)]
    src = {k: 1 for k in keys}

    def hook(k):
        if k.ident == 10:
            src[MutHash(100 + len(src))] = 0

    MutHash.hook = hook
    m = SnapshotMap({"a": 1})
    try:
        m.update(src)
    except RuntimeError as e:      # the keys were hashed: the dict changed under the read
        assert "changed size" in str(e)
        assert _items(m) == [("a", 1)] and m.version == 0
    else:                          # its stored hashes were read (no __hash__), as dict does
        assert _items(m) == [("a", 1)] + [(k, 1) for k in keys]
    finally:
        MutHash.hook = None
    m._check(rehash=True)


def test_key_hash_writing_to_the_map_during_update():
    # __hash__ runs before the lock: its write is applied, the update goes over it
    m = SnapshotMap({"a": 0})
    keys = [MutHash(i) for i in range(50)]

    def hook(k):
        if k.ident == 25:
            m["during"] = 1
            del m["a"]

    src = [(k, k.ident) for k in keys]
    MutHash.hook = hook
    m.update(src)
    MutHash.hook = None
    assert list(m) == ["during"] + keys
    m._check(rehash=True)


class EqWrites:
    """Colliding key whose __eq__ writes to `target` (under the writer lock)."""

    target = None

    def __init__(self, ident):
        self.ident = ident

    def __hash__(self):
        return 11

    def __eq__(self, other):
        if EqWrites.target is not None:
            EqWrites.target["x"] = 1
        return isinstance(other, EqWrites) and other.ident == self.ident


def test_key_eq_writing_to_the_map_during_update_is_refused_and_nothing_changes():
    m = SnapshotMap({EqWrites(0): 0})
    before = _items(m)
    EqWrites.target = m
    try:
        with pytest.raises(RuntimeError, match="re-entrant"):
            m.update([(EqWrites(i), i) for i in range(1, 10)])
    finally:
        EqWrites.target = None
    assert _items(m) == before and m.version == 0
    m._check(rehash=True)


class Boom:
    def __init__(self, ident, bad=False):
        self.ident, self.bad = ident, bad

    def __hash__(self):
        return 3

    def __eq__(self, other):
        if self.bad or getattr(other, "bad", False):
            raise ValueError("boom")
        return isinstance(other, Boom) and other.ident == self.ident


@pytest.mark.parametrize("into", ["empty", "small", "large"])
def test_eq_raising_mid_update_publishes_nothing_and_leaks_nothing(into):
    base = {"empty": {}, "small": {Boom(0): 0}, "large": {i: i for i in range(2000)}}[into]
    m = SnapshotMap(base)
    before = _items(m)
    val = object()
    pairs = [(i + 10000, val) for i in range(300)] + [(Boom(1), val), (Boom(2, True), val),
                                                      (Boom(3), val)]
    rc = sys.getrefcount(val)
    with pytest.raises(ValueError, match="boom"):
        m.update(pairs)
    with pytest.raises(ValueError, match="boom"):
        Snapshot(pairs)
    gc.collect()
    assert sys.getrefcount(val) == rc
    assert _items(m) == before and m.version == 0
    m._check(rehash=True)


def test_references_are_released_after_update():
    class V:
        pass

    keys = [f"key{i}" for i in range(500)]
    vals = [V() for _ in range(500)]
    base = sys.getrefcount(vals[0])
    m = SnapshotMap()
    m.update(zip(keys, vals))
    m.update(dict(zip(keys, vals)))                   # same values: nothing changes
    assert m.version == 1
    m.update({k: 0 for k in keys})
    assert [sys.getrefcount(vals[i]) for i in range(500)] == [base] * 500
    del m
    gc.collect()


def test_values_replaced_by_update_are_released_after_the_lock():
    # a replaced value's __del__ writes to the map: it runs after the lock is released
    m = SnapshotMap()
    log = []

    class Del:
        def __del__(self):
            m["from_del"] = len(log)
            log.append(1)

    m.update([("a", Del()), ("b", 1)])
    m.update([("a", 2), ("a", 3)] + [(i, i) for i in range(100)])
    assert log == [1] and m["from_del"] == 0 and m["a"] == 3
    m._check(rehash=True)


def test_batch_update_uses_the_same_rules():
    m = SnapshotMap({"a": 1})
    with m.batch() as b:
        b.update({"b": 2}, c=3)
        b.update([("a", 0), ("d", 4)])
        b.update(Snapshot({"e": 5}))
    assert _items(m) == [("a", 0), ("b", 2), ("c", 3), ("d", 4), ("e", 5)]
    m2 = SnapshotMap()
    with m2.batch() as b:
        b.update({i: i for i in range(1000)})
        b.update({i: -i for i in range(500, 1500)})
    assert _items(m2) == list({**{i: i for i in range(1000)},
                               **{i: -i for i in range(500, 1500)}}.items())
    m._check(rehash=True)
    m2._check(rehash=True)


def test_bulk_update_during_a_migration_and_under_tiny_tuning():
    with tuned("tiny", snapshot=dict(sync_below=4)):
        m = SnapshotMap()
        d = {}
        for i in range(0, 3000, 37):
            upd = {j: i for j in range(i, i + 60)}
            m.update(upd)
            d.update(upd)
            for j in range(i, i + 20):
                del m[j]
                del d[j]
            assert _items(m) == list(d.items())
        m._check(rehash=True)
