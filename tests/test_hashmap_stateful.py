"""Hypothesis state machine: HashMap against dict, operation by operation.

Same operations, same results, same exception types, same iteration order; the map's
invariant checker runs after every step. Two configurations: default tuning, and tiny
tuning (2 log positions per write, 4-entry segments, no synchronous migrations) so that
migrations are running during almost every operation.
"""
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fastmaps import HashMap

from ._keys import HKey


keys = st.one_of(
    st.integers(-20, 60),                              # dense small ints; -1 and -2 share a hash
    st.sampled_from([1.0, 2.5, True, False, 0.0, -0.0]),  # 1 == 1.0 == True; 0 == 0.0 == -0.0
    st.text(max_size=2),
    st.builds(HKey, st.integers(0, 15), st.integers(0, 3)),  # heavy collisions
)
values = st.integers(0, 1000)


def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except Exception as e:  # compare exception types, not identity
        return ("raise", type(e))


class MapVsDict(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.m = HashMap()
        self.d = {}

    def both(self, name, *args):
        rm = outcome(getattr(self.m, name), *args)
        rd = outcome(getattr(self.d, name), *args)
        assert rm == rd, (name, args, rm, rd)
        return rm

    @rule(k=keys, v=values)
    def setitem(self, k, v):
        self.both("__setitem__", k, v)

    @rule(k=keys)
    def delitem(self, k):
        self.both("__delitem__", k)

    @rule(k=keys)
    def getitem(self, k):
        self.both("__getitem__", k)

    @rule(k=keys)
    def contains(self, k):
        self.both("__contains__", k)

    @rule(k=keys, v=values)
    def get(self, k, v):
        self.both("get", k, v)

    @rule(k=keys, v=values)
    def setdefault(self, k, v):
        self.both("setdefault", k, v)

    @rule(k=keys)
    def pop(self, k):
        self.both("pop", k)

    @rule(k=keys, v=values)
    def pop_default(self, k, v):
        self.both("pop", k, v)

    @rule()
    def popitem(self):
        self.both("popitem")

    @rule(items=st.lists(st.tuples(keys, values), max_size=30))
    def update_pairs(self, items):
        self.both("update", items)

    @rule(items=st.dictionaries(st.integers(-50, 200), values, max_size=60))
    def update_dict(self, items):
        self.both("update", items)

    @rule(n=st.integers(1, 40))
    def bulk_insert_then_delete(self, n):
        # grows the map through several migrations, then leaves many tombstones
        for i in range(1000, 1000 + n):
            self.both("__setitem__", i, i)
        for i in range(1000, 1000 + n, 2):
            self.both("__delitem__", i)

    @rule(n=st.integers(1, 40), tag=st.sampled_from(["s", "t"]))
    def bulk_str_insert_then_delete(self, n, tag):
        # runs of exact-str keys fill segments that store no hashes; mixed with the other
        # rules' keys, migrations move entries between str-only and hash-storing segments
        for i in range(n):
            self.both("__setitem__", f"{tag}{i}", i)
        for i in range(0, n, 3):
            self.both("__delitem__", f"{tag}{i}")

    @rule(keep=st.booleans())
    def clear(self, keep):
        self.m.clear(keep_capacity=keep)
        self.d.clear()

    @rule()
    def copy(self):
        c = self.m.copy()
        c._check()
        assert list(c.items()) == list(self.d.items())
        self.m = c

    @rule()
    def shrink_to_fit(self):
        self.m.shrink_to_fit()

    @rule(n=st.integers(0, 300))
    def reserve(self, n):
        self.m.reserve(n)
        assert self.m.capacity >= n

    @rule(k=keys, v=values, stop=st.integers(0, 10))
    def iterate_and_update_values(self, k, v, stop):
        # value updates during iteration are legal and run migration steps
        it_m, it_d = iter(self.m), iter(self.d)
        seen_m, seen_d = [], []
        for i, (a, b) in enumerate(zip(it_m, it_d)):
            seen_m.append(a)
            seen_d.append(b)
            if i < stop:
                self.m[a] = v
                self.d[b] = v
        seen_m.extend(it_m)
        seen_d.extend(it_d)
        assert seen_m == seen_d

    @precondition(lambda self: len(self.d) > 0)
    @rule(v=values)
    def reversed_iteration_with_updates(self, v):
        out = []
        for k in reversed(self.m):
            self.m[k] = v
            out.append(k)
        for k in self.d:
            self.d[k] = v
        assert out == list(reversed(self.d))

    @rule(k=keys, v=values)
    def iterate_then_insert_raises(self, k, v):
        it_m, it_d = iter(self.m), iter(self.d)
        first = outcome(next, it_m)
        assert first == outcome(next, it_d)
        new_key = k not in self.d
        self.m[k] = v
        self.d[k] = v
        rm, rd = outcome(next, it_m), outcome(next, it_d)
        assert rm == rd
        if new_key and first[0] == "ok":
            assert rm == ("raise", RuntimeError)

    @invariant()
    def same_contents_and_order(self):
        self.m._check()
        assert len(self.m) == len(self.d)
        assert list(self.m.items()) == list(self.d.items())
        assert list(reversed(self.m.items())) == list(reversed(self.d.items()))
        assert self.m == self.d and self.d == self.m


TestMapVsDict = MapVsDict.TestCase


class MapVsDictMigrating(MapVsDict):
    pass


@pytest.mark.usefixtures("tiny")
class TestMapVsDictMigrating(MapVsDictMigrating.TestCase):
    pass


class MapVsDictPrefaulting(MapVsDict):
    pass


@pytest.mark.usefixtures("prefault")
class TestMapVsDictPrefaulting(MapVsDictPrefaulting.TestCase):
    pass
