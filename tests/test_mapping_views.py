"""The view family shared by HashMap, SnapshotMap, Snapshot and Batch (fastmaps._mapping),
with dict's views as the oracle: results and exception types of every operator and method,
for every kind of operand."""
import collections.abc as abc
import copy
import operator
import pickle
import types

import pytest

from fastmaps import HashMap, Snapshot, SnapshotMap


MAPS = {"HashMap": HashMap, "SnapshotMap": SnapshotMap, "Snapshot": Snapshot}

DICT_VIEWS = (type({}.keys()), type({}.items()))
ITEMS = {"a": 1, "b": 2, "c": [3]}          # one unhashable value


class Unhashable:
    __hash__ = None

    def __eq__(self, other):
        return self is other


class NotASetButASet(abc.Set):
    """An abc.Set that is no set: dict's views leave the comparison to it."""

    def __init__(self, items):
        self._items = list(items)

    def __contains__(self, x):
        return x in self._items

    def __iter__(self):
        return iter(self._items)

    def __len__(self):
        return len(self._items)

    def __eq__(self, other):
        return "abc-eq"

    __hash__ = None


def _operands(d):
    return [
        {"a", "z"}, {"a", "b", "c"}, set(), frozenset({"b"}), {"a", "b", "c", "d", "e"},
        ["a", "z"], ("c",), [["unhashable"]], iter(["a", "b"]), "abc",
        {("a", 1), ("b", 2)}, {("a", 1), ("c", 3)}, [("a", 1)], [("c", [3])],
        {"a": 0, "z": 0}.keys(), {"a": 1, "q": 2, "r": 3, "s": 4}.keys(), {"a": 1}.items(),
        dict(d).items(), dict(d).keys(), {"x": 1, "y": 2, "z": 3, "w": 4}.items(),
        1, None, 2.5, NotASetButASet(["a", "b", "c"]), NotASetButASet([("a", 1)]),
    ]


def _outcome(f):
    try:
        r = f()
    except Exception as e:              # the type is what must match dict's
        return ("raises", type(e))
    if isinstance(r, (set, frozenset)):
        return ("set", type(r), {repr(x) for x in r})
    return ("value", r)


BINOPS = [operator.and_, operator.or_, operator.sub, operator.xor,
          operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge]


def _fresh(other):
    # an iterator operand is consumed by the first use: give each run its own
    return iter(["a", "b"]) if isinstance(other, type(iter([]))) else other


@pytest.mark.parametrize("name", MAPS)
@pytest.mark.parametrize("kind", ["keys", "items"])
def test_set_operators_match_dict(name, kind):
    d = dict(ITEMS)
    m = MAPS[name](d)
    for i, other in enumerate(_operands(d)):
        for op in BINOPS:
            want = _outcome(lambda: op(getattr(d, kind)(), _fresh(other)))
            got = _outcome(lambda: op(getattr(m, kind)(), _fresh(other)))
            assert got == want, (kind, op.__name__, i, other)
            if isinstance(other, DICT_VIEWS):
                continue        # dict's own operator runs first, and sees no dict view
            want = _outcome(lambda: op(_fresh(other), getattr(d, kind)()))
            got = _outcome(lambda: op(_fresh(other), getattr(m, kind)()))
            assert got == want, ("reflected", kind, op.__name__, i, other)
        want = _outcome(lambda: getattr(d, kind)().isdisjoint(_fresh(other)))
        got = _outcome(lambda: getattr(m, kind)().isdisjoint(_fresh(other)))
        assert got == want, (kind, "isdisjoint", i, other)


@pytest.mark.parametrize("a", MAPS)
@pytest.mark.parametrize("b", list(MAPS) + ["dict"])
@pytest.mark.parametrize("kind", ["keys", "items"])
def test_views_of_two_maps_match_dict(a, b, kind):
    da, db = {"a": 1, "b": [2]}, {"b": [2], "c": 3, "d": 4}
    ma = MAPS[a](da)
    mb = dict(db) if b == "dict" else MAPS[b](db)
    for op in BINOPS:
        want = _outcome(lambda: op(getattr(da, kind)(), getattr(db, kind)()))
        got = _outcome(lambda: op(getattr(ma, kind)(), getattr(mb, kind)()))
        assert got == want, (kind, op.__name__)
    want = _outcome(lambda: getattr(da, kind)().isdisjoint(getattr(db, kind)()))
    got = _outcome(lambda: getattr(ma, kind)().isdisjoint(getattr(mb, kind)()))
    assert got == want


@pytest.mark.parametrize("name", MAPS)
def test_items_xor_does_not_hash_equal_values_like_dict(name):
    d1, d2 = {1: [], 2: 3}, {1: [], 2: 4}
    m1, m2 = MAPS[name](d1), MAPS[name](d2)
    assert (m1.items() ^ m2.items()) == (d1.items() ^ d2.items()) == {(2, 3), (2, 4)}
    assert (m1.items() ^ d2.items()) == {(2, 3), (2, 4)}
    with pytest.raises(TypeError):
        m1.items() ^ MAPS[name]({1: [0]}).items()      # unequal unhashable values: hashed
    with pytest.raises(TypeError):
        d1.items() ^ {1: [0]}.items()


@pytest.mark.parametrize("name", MAPS)
def test_membership_len_iteration_match_dict(name):
    d = dict(ITEMS)
    m = MAPS[name](d)
    for kind in ("keys", "values", "items"):
        dv, mv = getattr(d, kind)(), getattr(m, kind)()
        assert len(mv) == len(dv) and list(mv) == list(dv)
        assert list(reversed(mv)) == list(reversed(dv))
        for x in ("a", "z", ("a", 1), ("a", 2), ["a", 1], ("c", [3]), 1, [3], 2,
                  ("a",), [], Unhashable()):
            assert _outcome(lambda: x in mv) == _outcome(lambda: x in dv), (kind, x)
        assert hasattr(mv, "__contains__") == hasattr(dv, "__contains__")


@pytest.mark.parametrize("name", MAPS)
def test_types_hash_repr_mapping_pickle_like_dict(name):
    d = {"a": 1}
    m = MAPS[name](d)
    prefix = "snapshot" if name != "HashMap" else "hashmap"
    for kind, base in (("keys", abc.KeysView), ("values", abc.ValuesView),
                       ("items", abc.ItemsView)):
        v, dv = getattr(m, kind)(), getattr(d, kind)()
        assert isinstance(v, base)
        assert type(v) is type(getattr(HashMap(), kind)())     # one family for every map
        assert repr(v) == repr(dv).replace("dict_", prefix + "_")
        assert isinstance(v.mapping, types.MappingProxyType) and v.mapping == d
        assert _outcome(lambda: hash(v))[0] == _outcome(lambda: hash(dv))[0]
        assert (v == v) == (dv == dv) and (v != v) == (dv != dv)
        for f in (pickle.dumps, copy.copy, copy.deepcopy):
            with pytest.raises(TypeError):
                f(v)
        with pytest.raises(TypeError):
            type(v)()
        with pytest.raises(TypeError):
            type(v).__new__(type(v), m)
        with pytest.raises(TypeError):
            class Sub(type(v)):
                pass


def test_repr_of_a_view_that_contains_itself_like_dict():
    for cls in (dict, HashMap):
        m = cls()
        v = m.values()
        m[1] = v
        assert repr(v).endswith("_values([...])")
    d, m = {"a": 1}, HashMap(a=1)
    d["k"], m["k"] = d.items(), m.items()
    assert repr(m["k"]) == repr(d["k"]).replace("dict_", "hashmap_")
    assert repr(m["k"]) == "hashmap_items([('a', 1), ('k', ...)])"


def test_subclass_views_name_the_subclass_and_use_the_map_storage():
    class H(HashMap):
        def __contains__(self, key):
            raise AssertionError("a view reads the storage, not the subclass")

        def __len__(self):
            raise AssertionError("a view reads the storage, not the subclass")

    h = H(a=1)
    assert repr(h.keys()) == "h_keys(['a'])"
    assert "a" in h.keys() and len(h.keys()) == 1 and ("a", 1) in h.items()


def test_batch_views_are_the_shared_views_of_its_current_contents():
    m = SnapshotMap(a=1)
    with m.batch() as b:
        b["b"] = [2]
        views = b.keys(), b.values(), b.items()
        b["c"] = 3
        for v, kind in zip(views, ("keys", "values", "items")):
            assert type(v) is type(getattr(HashMap(), kind)())
        assert list(views[2]) == [("a", 1), ("b", [2])]
        assert (views[2] ^ {"a": 1, "b": [2]}.items()) == set()
        assert views[0] == {"a", "b"} and "c" not in views[0]


def test_hashmap_views_are_live_snapshotmap_views_are_not():
    h, s = HashMap(a=1), SnapshotMap(a=1)
    hk, sk = h.keys(), s.keys()
    h["b"] = s["b"] = 2
    assert list(hk) == ["a", "b"] and list(sk) == ["a"]
    assert "b" in hk and "b" not in sk and len(hk) == 2 and len(sk) == 1
