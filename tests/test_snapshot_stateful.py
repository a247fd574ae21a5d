"""Hypothesis state machine: SnapshotMap against a dict model (batches, replace, clear,
atomics), with the invariant checker after every step and snapshots that must never change.
Order is part of the model: iteration must follow dict's insertion order and popitem() must
remove the same (last inserted) item as dict.popitem()."""
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import pytest

from fastmaps import Snapshot, SnapshotMap

from ._keys import HKey


KEYS = st.one_of(
    st.integers(-40, 40),
    st.sampled_from([1.0, 2.0, True, False, 0.5, float("inf")]),
    st.sampled_from(["a", "b", "c", "", "long key " * 3]),
    st.builds(HKey, st.integers(0, 12), st.sampled_from([7, 7 + (1 << 35), 39, 1 << 60])),
)
VALUES = st.integers(0, 5)
ITEMS = st.lists(st.tuples(KEYS, VALUES), max_size=12)
BATCH_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, VALUES),
        st.tuples(st.just("del"), KEYS, st.none()),
        st.tuples(st.just("pop"), KEYS, st.none()),
        st.tuples(st.just("setdefault"), KEYS, VALUES),
        st.tuples(st.just("update"), ITEMS, st.none()),
        st.tuples(st.just("clear"), st.none(), st.none()),
        st.tuples(st.just("snapshot"), st.none(), st.none()),
        st.tuples(st.just("popitem"), st.none(), st.none()),
    ),
    max_size=15,
)


def key_types(mapping):
    """[(key, type of the stored key object)] in iteration order: checks both the order and
    that first-inserted key objects are kept."""
    return [(k, type(k)) for k in mapping]


class SnapshotMapMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.m = SnapshotMap()
        self.model = {}
        self.snaps = []          # (Snapshot, dict copy at that time)
        self.last_version = self.m.version

    # -- single-key writes -------------------------------------------------------------
    @rule(k=KEYS, v=VALUES)
    def setitem(self, k, v):
        self.m[k] = v
        self.model[k] = v

    @rule(k=KEYS)
    def delitem(self, k):
        if k in self.model:
            del self.m[k]
            del self.model[k]
        else:
            try:
                del self.m[k]
            except KeyError as e:
                assert e.args == (k,)
            else:
                raise AssertionError("del of a missing key did not raise")

    @rule(k=KEYS, default=st.none() | VALUES)
    def pop(self, k, default):
        assert self.m.pop(k, default) == self.model.pop(k, default)

    @rule()
    def popitem(self):
        if self.model:
            assert self.m.popitem() == self.model.popitem()      # LIFO, like dict
        else:
            try:
                self.m.popitem()
            except KeyError:
                pass
            else:
                raise AssertionError("popitem on empty map did not raise")

    @rule(k=KEYS, v=VALUES)
    def setdefault(self, k, v):
        assert self.m.setdefault(k, v) == self.model.setdefault(k, v)

    @rule(items=ITEMS, kw=st.dictionaries(st.sampled_from(["a", "x"]), VALUES, max_size=2))
    def update(self, items, kw):
        self.m.update(items, **kw)
        self.model.update(items, **kw)

    @rule()
    def clear(self):
        self.m.clear()
        self.model.clear()

    @rule(n=st.integers(1, 120), keep=st.integers(0, 6), start=st.integers(0, 3))
    def churn(self, n, keep, start):
        # many inserts, then most of them deleted oldest first: index growth and log
        # compaction (incremental migrations under the tiny tuning below)
        ks = [1000 + 200 * start + i for i in range(n)]
        for k in ks:
            self.m[k] = k
            self.model[k] = k
        for k in ks[: max(0, n - keep)]:
            del self.m[k]
            del self.model[k]

    @rule(items=ITEMS, as_snapshot=st.booleans())
    def replace(self, items, as_snapshot):
        new = dict(items)
        before = dict(self.model)
        prev = self.m.replace(Snapshot(items) if as_snapshot else items)
        assert isinstance(prev, Snapshot) and prev == before
        self.model = new

    # -- atomics -----------------------------------------------------------------------
    @rule(k=KEYS, v=VALUES)
    def load_or_store(self, k, v):
        if k in self.model:
            assert self.m.load_or_store(k, v) == (self.model[k], True)
        else:
            assert self.m.load_or_store(k, v) == (v, False)
            self.model[k] = v

    @rule(k=KEYS)
    def load_and_delete(self, k):
        if k in self.model:
            assert self.m.load_and_delete(k) == (self.model.pop(k), True)
        else:
            assert self.m.load_and_delete(k) == (None, False)

    @rule(k=KEYS, v=VALUES)
    def swap(self, k, v):
        expect = (self.model[k], True) if k in self.model else (None, False)
        assert self.m.swap(k, v) == expect
        self.model[k] = v

    @rule(k=KEYS, old=VALUES, new=VALUES)
    def compare_and_swap(self, k, old, new):
        ok = k in self.model and self.model[k] == old
        assert self.m.compare_and_swap(k, old, new) is ok
        if ok:
            self.model[k] = new

    @rule(k=KEYS, old=VALUES)
    def compare_and_delete(self, k, old):
        ok = k in self.model and self.model[k] == old
        assert self.m.compare_and_delete(k, old) is ok
        if ok:
            del self.model[k]

    # -- batches -----------------------------------------------------------------------
    @rule(ops=BATCH_OPS, fail=st.booleans())
    def batch(self, ops, fail):
        model = dict(self.model)
        inner_snaps = []
        try:
            with self.m.batch() as b:
                for op, a, c in ops:
                    if op == "set":
                        b[a] = c
                        model[a] = c
                    elif op == "del":
                        if a in model:
                            del b[a]
                            del model[a]
                    elif op == "pop":
                        assert b.pop(a, None) == model.pop(a, None)
                    elif op == "setdefault":
                        assert b.setdefault(a, c) == model.setdefault(a, c)
                    elif op == "update":
                        b.update(a)
                        model.update(a)
                    elif op == "clear":
                        b.clear()
                        model.clear()
                    elif op == "snapshot":
                        inner_snaps.append((b.snapshot(), dict(model)))
                    elif op == "popitem" and model:
                        assert b.popitem() == model.popitem()
                    assert len(b) == len(model)
                assert list(b.items()) == list(model.items()) and b.snapshot() == model
                assert self.m == self.model          # nothing published yet
                if fail:
                    raise ZeroDivisionError
        except ZeroDivisionError:
            assert fail
        else:
            self.model = model
        for s, expect in inner_snaps:
            s._check(rehash=True)
            assert s == expect and list(s.items()) == list(expect.items())

    # -- snapshots ---------------------------------------------------------------------
    @precondition(lambda self: len(self.snaps) < 8)
    @rule()
    def take_snapshot(self):
        self.snaps.append((self.m.snapshot(), dict(self.model)))

    @precondition(lambda self: self.snaps)
    @rule()
    def drop_snapshot(self):
        self.snaps.pop(0)

    @invariant()
    def agrees_with_model(self):
        m = self.m
        m._check(rehash=True)
        assert len(m) == len(self.model)
        assert m == self.model
        assert list(m.items()) == list(self.model.items())       # insertion order
        assert list(reversed(m)) == list(reversed(self.model))
        assert key_types(m) == key_types(self.model)
        v = m.version
        assert v >= self.last_version
        self.last_version = v
        for s, expect in self.snaps:
            assert s == expect and len(s) == len(expect)
            assert list(s.items()) == list(expect.items())


TestSnapshotMapStateful = SnapshotMapMachine.TestCase


class MigratingMachine(SnapshotMapMachine):
    """The same machine with every migration incremental (two log positions per write),
    so that lookups, writes, batches and snapshots meet the old index and the gap."""


@pytest.mark.usefixtures("tiny")
class TestSnapshotMapMigrating(MigratingMachine.TestCase):
    pass
