"""dict compatibility: every fastmaps mapping, side by side with dict.

One fixture, ``mapping_cls``, runs each test against HashMap and SnapshotMap, each under
the default and the ``tiny`` tuning (tests/_tuning.py: migrations running all the time).
Each test does the same operations on a dict and on the structure and compares results,
exception types (and messages, with the type's name normalised) and iteration order.

Where SnapshotMap differs from dict on purpose (docs/design.md, "Differences from dict"),
the test says so where it branches (``if snapshot_semantics(...)``), and checks
SnapshotMap's documented behaviour instead. HashMap's documented differences
(docs/design.md, "Intentional differences from dict") are checked the same way.

The structure-specific suites sit beside this one: test_hashmap*.py, test_snapshot*.py.
The vendored CPython mapping suite runs against both in test_cpython_mapping_tests.py.
"""
import collections
import collections.abc as abc
import copy
import gc
import operator
import pickle
import random
import types

import pytest

from fastmaps import HashMap, SnapshotMap

from ._keys import HKey
from ._tuning import tuned

MAPS = (HashMap, SnapshotMap)


@pytest.fixture(params=[(cls, t) for cls in MAPS for t in ("default", "tiny")],
                ids=lambda p: f"{p[0].__name__}-{p[1]}")
def mapping_cls(request):
    cls, tuning = request.param
    with tuned(tuning):
        yield cls


def snapshot_semantics(cls):
    """True for SnapshotMap (and its subclasses): the documented differences apply."""
    return issubclass(cls, SnapshotMap)


def check(m, rehash=True):
    """The structure's own invariant check (rehash: SnapshotMap also checks each stored
    hash against hash(key))."""
    if isinstance(m, SnapshotMap):
        m._check(rehash=rehash)
    else:
        m._check()


def outcome(fn, *args):
    """("ok", result) or (exception type, message with the structure's name replaced by
    dict's wording), comparable between dict and a structure."""
    try:
        return ("ok", fn(*args))
    except Exception as e:
        msg = str(e)
        for cls in MAPS:
            msg = msg.replace(f"'{cls.__module__}.{cls.__name__}'", "'dict'")
            msg = msg.replace(cls.__name__, "dictionary")
        return (type(e), msg)


def same(cls, op, init=(), *, messages=True):
    """Apply op to dict(init) and cls(init): same outcome (exception messages compared
    unless `messages` is false), then the same items in the same order; returns the
    structure."""
    d, m = dict(init), cls(init)
    got, want = outcome(op, m), outcome(op, d)
    if messages or want[0] == "ok":
        assert got == want
    else:
        assert got[0] is want[0]
    assert list(m.items()) == list(d.items())
    check(m)
    return m


def pairs(n, start=0):
    return [(f"k{i}", i) for i in range(start, start + n)]


# Module level (picklable) subclasses, one per structure
class HashMapSub(HashMap):
    pass


class SnapshotMapSub(SnapshotMap):
    pass


SUBCLASS = {HashMap: HashMapSub, SnapshotMap: SnapshotMapSub}


class HashMapNeedsArgs(HashMap):
    def __init__(self, x, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.x = x
        self["added_by_init"] = True


class SnapshotMapNeedsArgs(SnapshotMap):
    def __init__(self, x, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.x = x
        self["added_by_init"] = True


NEEDS_ARGS = {HashMap: HashMapNeedsArgs, SnapshotMap: SnapshotMapNeedsArgs}


class HashMapSlotted(HashMap):
    __slots__ = ("s",)


class SnapshotMapSlotted(SnapshotMap):
    __slots__ = ("s",)


SLOTTED = {HashMap: HashMapSlotted, SnapshotMap: SnapshotMapSlotted}


# ---------------------------------------------------------------- construction

class KeysOnly:
    def keys(self):
        return ["p", "q"]

    def __getitem__(self, k):
        return k * 2


@pytest.mark.parametrize("args,kwargs", [
    ((), {}),
    (({"a": 1, "b": 2},), {}),
    (([("a", 1), ("b", 2), ("a", 3)],), {}),
    (([["x", 1], "yz"],), {}),
    ((["ab", ("c", 1)],), {}),
    (({"a": 1},), {"b": 2, "a": 5}),
    ((), {"self": 1, "other": 2}),
    ((types.MappingProxyType({"m": 1}),), {}),
    ((collections.Counter("abca"),), {}),
    ((KeysOnly(),), {}),
    (([(True, 1), (1, 2), (1.0, 3), (0, 4), (False, 5)],), {}),
])
def test_construction(mapping_cls, args, kwargs):
    m, d = mapping_cls(*args, **kwargs), dict(*args, **kwargs)
    assert list(m.items()) == list(d.items())
    assert [type(k) for k in m] == [type(k) for k in d]
    check(m)
    for src in (m, HashMap(d), SnapshotMap(d), SnapshotMap(d).snapshot()):
        assert list(mapping_cls(src).items()) == list(d.items())


@pytest.mark.parametrize("bad", [[1, 2], [(1, 2, 3)], [(1,)], 5, [([], 1)], [("a", 1), "xyz"],
                                 [("a", 1), 5], [("a", 1), ("b",)], [("a", 1), ["k"]],
                                 [("a", 1), 1.5], [("a", 1), ["b", 2], "cd"]])
def test_construction_and_update_errors(mapping_cls, bad):
    want = outcome(dict, bad)
    got = outcome(mapping_cls, bad)
    if want[0] == "ok":                     # ("cd" is a pair)
        assert list(got[1].items()) == list(want[1].items())
        same(mapping_cls, lambda c: c.update(bad), {"z": 0})
        return
    assert got == want
    if snapshot_semantics(mapping_cls):
        # documented: bulk writes are atomic: nothing before the bad pair is applied
        m = mapping_cls({"z": 0})
        assert outcome(m.update, bad) == outcome({}.update, bad)
        assert list(m.items()) == [("z", 0)] and m.version == 0
        check(m)
    else:
        same(mapping_cls, lambda c: c.update(bad), {"z": 0})


def test_too_many_positional_arguments(mapping_cls):
    assert outcome(mapping_cls, {}, {})[0] is outcome(dict, {}, {})[0] is TypeError
    if mapping_cls is HashMap:
        assert outcome(mapping_cls, {}, {})[1].endswith("at most 1 argument, got 2")
    # (documented, both: otherwise argument-count errors are worded by Cython)
    same(mapping_cls, lambda c: c.update({}, {}), messages=False)


def test_fromkeys_and_subclasses(mapping_cls):
    assert list(mapping_cls.fromkeys("abc", 0).items()) == \
        list(dict.fromkeys("abc", 0).items())
    assert list(mapping_cls.fromkeys("abc").items()) == list(dict.fromkeys("abc").items())
    s = SUBCLASS[mapping_cls].fromkeys([1, 2])
    assert type(s) is SUBCLASS[mapping_cls] and s == {1: None, 2: None}

    def doubling(base):
        class Sub(base):
            def __setitem__(self, key, value):
                super().__setitem__(key, value * 2)
        return Sub

    # a subclass's fromkeys stores through its __setitem__, as dict's does
    assert doubling(mapping_cls).fromkeys("ab", 1) == doubling(dict).fromkeys("ab", 1) \
        == {"a": 2, "b": 2}


def test_init_again_updates(mapping_cls):
    same(mapping_cls, lambda c: c.__init__({"c": 3}, b=2), {"a": 1, "b": 0})


def test_subclass_methods_are_not_called_by_init_ior_setdefault(mapping_cls):
    calls = []

    class Sub(mapping_cls):
        def update(self, *a, **k):
            calls.append("update")
            raise AssertionError("dict.__init__ / |= do not call a subclass's update")

        def load_or_store(self, key, value):
            calls.append("load_or_store")
            raise AssertionError("dict.setdefault does not call other methods")

        def __setitem__(self, key, value):
            calls.append("setitem")
            raise AssertionError("dict.__init__ / |= do not call a subclass's __setitem__")

    class DSub(dict):
        def update(self, *a, **k):
            raise AssertionError

        def __setitem__(self, key, value):
            raise AssertionError

    m = Sub({"a": 1}, b=2)
    m.__init__({"c": 3})
    m |= {"d": 4}
    assert m.setdefault("e", 5) == 5 and m.setdefault("a", 0) == 1
    d = DSub({"a": 1}, b=2)
    d.__init__({"c": 3})
    d |= {"d": 4}
    d.setdefault("e", 5)
    assert list(m.items()) == list(d.items()) and not calls
    check(m)


# ---------------------------------------------------------------- reads and writes

def test_reads(mapping_cls):
    init = pairs(100)
    for op in (lambda c: len(c), lambda c: c["k5"], lambda c: c.get("k5"),
               lambda c: c.get("zz"), lambda c: c.get("zz", 7), lambda c: "k99" in c,
               lambda c: "k100" in c, lambda c: list(c), lambda c: list(reversed(c)),
               lambda c: list(c.keys()), lambda c: list(c.values()),
               lambda c: list(c.items()), lambda c: bool(c), lambda c: c["zz"],
               lambda c: c == dict(init), lambda c: dict(init) == c):
        same(mapping_cls, op, init)


def test_writes(mapping_cls):
    def script(c):
        out = []
        c["a"] = 1
        c["b"] = 2
        out += [c.pop("a"), c.pop("a", None), outcome(c.pop, "a")]
        out += [c.setdefault("b", 9), c.setdefault("c", 3), c.setdefault("d")]
        del c["d"]
        out.append(outcome(c.__delitem__, "d"))
        out += [c.popitem(), c.popitem(), outcome(c.popitem)]
        c.update(x=1)
        c.clear()
        out.append(len(c))
        c.update([("y", 2)], z=3)
        return out

    same(mapping_cls, script)


def test_keyerror_carries_the_key(mapping_cls):
    for op in (lambda c: c[(1, 2)], lambda c: c.__delitem__("nope"),
               lambda c: c.pop((3,)), lambda c: c.pop(frozenset())):
        m, d = mapping_cls(a=1), {"a": 1}
        with pytest.raises(KeyError) as em:
            op(m)
        with pytest.raises(KeyError) as ed:
            op(d)
        assert em.value.args == ed.value.args


def test_popitem_is_lifo_and_names_itself_when_empty(mapping_cls):
    m, d = mapping_cls(pairs(50)), dict(pairs(50))
    del m["k49"], d["k49"]
    del m["k47"], d["k47"]
    while d:
        assert m.popitem() == d.popitem()
    with pytest.raises(KeyError, match="popitem"):
        m.popitem()
    check(m)


def test_popitem_after_a_long_run_of_trailing_holes(mapping_cls):
    m, d = mapping_cls(), {}
    for i in range(50000):
        m[i] = d[i] = i
    for i in range(1000, 50000):          # a long run of holes, not at the tail until the end
        del m[i], d[i]
    for _ in range(10):
        assert m.popitem() == d.popitem()
    check(m)
    assert list(m.items()) == list(d.items())


def test_argument_counts_and_keywords(mapping_cls):
    # documented (both): the wording of argument-count errors is Cython's; the type is
    # dict's
    for op in (lambda c: c.pop(), lambda c: c.pop("a", 1, 2), lambda c: c.get(),
               lambda c: c.get(key=1), lambda c: c.setdefault(key=1),
               lambda c: c.pop("a", default=1), lambda c: c.get("a", default=1),
               lambda c: c.setdefault("a", default=1), lambda c: c.pop(key="a"),
               lambda c: c.update({}, {}), lambda c: c.copy(None), lambda c: c.clear(1),
               lambda c: c.popitem(1), lambda c: c.keys(1)):
        m, d = mapping_cls(a=1), {"a": 1}
        assert outcome(op, m)[0] is outcome(op, d)[0] is TypeError
        assert list(m.items()) == [("a", 1)]
    assert mapping_cls(a=1).pop("b", None) is None


def test_pop_of_an_empty_map_does_not_hash(mapping_cls):
    same(mapping_cls, lambda c: c.pop([], 7))
    same(mapping_cls, lambda c: c.pop([]))
    same(mapping_cls, lambda c: c.pop([], 7), {"a": 1})        # not empty: hashes


def test_random_operations_against_dict(mapping_cls):
    rnd = random.Random(7)
    m, d = mapping_cls(), {}
    for step in range(20000):
        k = rnd.randrange(3000)
        r = rnd.random()
        if r < 0.55:
            m[k] = d[k] = step
        elif r < 0.9:
            assert m.pop(k, None) == d.pop(k, None)
        else:
            assert m.get(k) == d.get(k)
        if step % 2500 == 0:
            check(m)
            assert m == d and list(m.items()) == list(d.items())
    assert m == d and len(m) == len(d) and list(m.items()) == list(d.items())
    check(m)
    while d:                                     # LIFO popitem down to empty
        assert m.popitem() == d.popitem()
    check(m)


def test_lookups_and_iteration_while_writing(mapping_cls):
    m, d = mapping_cls(), {}
    for i in range(3000):
        m[i] = d[i] = i
        if i % 5 == 0:
            del m[i // 2], d[i // 2]
        if i % 101 == 0:
            check(m)
            assert all(m[k] == v for k, v in d.items())
            assert list(m) == list(d)
    if mapping_cls is HashMap:
        assert m.stats()["forced_finishes"] == 0   # (SnapshotMap's: see tests/_tuning.py)


# ---------------------------------------------------------------- keys

def test_equal_keys_of_different_types_are_one_key_and_the_first_key_is_kept(mapping_cls):
    def script(c):
        c[1] = "int"
        c[1.0] = "float"
        c[True] = "bool"
        c[0.0] = "zero"
        c[-0.0] = "negzero"
        c[False] = "false"
        return [type(k) for k in c]

    m = same(mapping_cls, script)
    assert list(m.items()) == [(1, "bool"), (0.0, "false")]


def test_nan_keys_match_by_identity_only(mapping_cls):
    nan, nan2 = float("nan"), float("nan")

    def script(c):
        c[nan] = 1
        c[nan2] = 2
        return [len(c), c[nan], nan in c, float("nan") in c, list(c.values())]

    same(mapping_cls, script)


@pytest.mark.parametrize("key", [[], {}, set(), HashMap(), SnapshotMap(), bytearray()])
def test_unhashable_keys_raise_dicts_typeerror(mapping_cls, key):
    for op in (lambda c: c[key], lambda c: c.__setitem__(key, 1),
               lambda c: c.__delitem__(key), lambda c: key in c, lambda c: c.get(key),
               lambda c: c.pop(key, None), lambda c: c.setdefault(key),
               lambda c: c.update([(key, 1)]), lambda c: c.fromkeys([key]),
               lambda c: key in c.keys(), lambda c: (key, 1) in c.items()):
        got = same(mapping_cls, op, {"a": 1})
        assert outcome(op, got)[0] is TypeError


def test_all_colliding_hashes(mapping_cls):
    m, d = mapping_cls(), {}
    rnd = random.Random(5)
    for i in range(3000):
        k = HKey(rnd.randrange(200))
        if rnd.random() < 0.6:
            m[k] = d[k] = i
        else:
            assert outcome(m.pop, k) == outcome(d.pop, k)
        if i % 97 == 0:
            check(m)
    assert list(m.items()) == list(d.items())
    check(m)


def test_hash_called_once_per_operation_and_eq_only_on_equal_hashes(mapping_cls):
    # CPython's test_setitem_atomic_at_resize, extended to many migrations
    class Counted:
        hashes = 0
        eqs = 0

        def __init__(self, v):
            self.v = v

        def __hash__(self):
            Counted.hashes += 1
            return hash(self.v)

        def __eq__(self, other):
            Counted.eqs += 1
            return isinstance(other, Counted) and self.v == other.v

    m = mapping_cls()
    keys = [Counted(i) for i in range(2000)]
    for k in keys:
        m[k] = 1
    assert Counted.hashes == 2000          # once per insert; migrations never hash
    assert Counted.eqs == 0               # distinct hashes: never compared
    Counted.hashes = 0
    for k in keys:
        assert m[k] == 1
    assert Counted.hashes == 2000 and Counted.eqs == 0   # identity first


# ---------------------------------------------------------------- order

def test_insertion_order(mapping_cls):
    def script(c):
        for k in ["b", "a", "c", 3, 1.5, "z"]:
            c[k] = k
        c["a"] = "updated"                  # an update keeps the key's place
        del c["b"]
        c["b"] = "back"                     # a re-inserted key goes to the end
        c.update([("c", 0), ("new", 1)])
        return [list(c), list(reversed(c)), list(pickle.loads(pickle.dumps(c)).items()),
                c.popitem(), c.popitem(), list(c.items())]

    same(mapping_cls, script)


def test_copy_keeps_order_after_deletes(mapping_cls):
    m = mapping_cls(pairs(200))
    for k in list(m)[::3]:
        del m[k]
    for i in range(40):
        m[("t", i)] = i
        c = m.copy()
        check(c)
        assert list(c.items()) == list(m.items())
        assert type(c) is mapping_cls


# ---------------------------------------------------------------- types and protocols

def test_is_a_registered_mutable_mapping_not_a_dict(mapping_cls):
    m = mapping_cls()
    assert isinstance(m, abc.MutableMapping) and isinstance(m, abc.Mapping)
    assert not isinstance(m, dict)          # documented (both)
    with pytest.raises(TypeError):
        hash(m)
    assert mapping_cls[str, int] == types.GenericAlias(mapping_cls, (str, int))


def test_match_statement_mapping_patterns(mapping_cls):
    def match(c):
        match c:
            case {"kind": "point", "x": x, **rest}:
                return ("point", x, rest)
            case {"a": a}:
                return ("a", a)
            case _:
                return None

    for init in ({"kind": "point", "x": 1, "b": 2}, {"a": 1}, {"b": 1}):
        same(mapping_cls, match, init)
    if snapshot_semantics(mapping_cls):
        assert match(mapping_cls(a=1).snapshot()) == ("a", 1)


# ---------------------------------------------------------------- views

def test_views_follow_the_map(mapping_cls):
    m, d = mapping_cls(a=1), {"a": 1}
    mv = m.keys(), m.values(), m.items()
    dv = d.keys(), d.values(), d.items()
    m["b"] = d["b"] = 2
    if snapshot_semantics(mapping_cls):
        # documented: views read the version published when they were made
        dv = {"a": 1}.keys(), {"a": 1}.values(), {"a": 1}.items()
    for a, b in zip(mv, dv):
        assert list(a) == list(b) and len(a) == len(b) and list(reversed(a)) == list(reversed(b))
    assert isinstance(mv[0], abc.KeysView) and isinstance(mv[1], abc.ValuesView)
    assert isinstance(mv[2], abc.ItemsView)
    for a, b in zip(m.keys(), d.keys()):
        assert a == b
    for x in ("a", "z", ("a", 1), ("a", 2), ("b", 2), 1, 3, ["a", 1], ("a",), [], ([], 1)):
        for i in range(3):
            va, vb = (m.keys(), m.values(), m.items())[i], (d.keys(), d.values(), d.items())[i]
            assert outcome(lambda v: x in v, va) == outcome(lambda v: x in v, vb), (i, x)


def test_views_have_a_read_only_mapping(mapping_cls):
    m = mapping_cls(a=1)
    for view in (m.keys(), m.values(), m.items()):
        assert view.mapping == {"a": 1} and type(view.mapping) is types.MappingProxyType
        assert view.mapping["a"] == 1
        with pytest.raises(TypeError):
            view.mapping["b"] = 2


@pytest.mark.parametrize("other", [{"a", "c"}, ["a", "c"], {"a": 0, "c": 0}.keys(), ("c",),
                                   set(), {"a", "b"}, iter(["a"])])
def test_keys_view_set_operations(mapping_cls, other):
    d = {"a": 1, "b": 2}
    m = mapping_cls(d)
    if not isinstance(other, (set, list, tuple, type({}.keys()))):
        other = list(other)
    for op in ("__and__", "__or__", "__sub__", "__xor__", "isdisjoint"):
        assert getattr(m.keys(), op)(other) == getattr(d.keys(), op)(other), op
    if isinstance(other, (set, type({}.keys()))):
        assert (other & m.keys()) == (other & d.keys())
        assert (other - m.keys()) == (other - d.keys())
        assert (other | m.keys()) == (other | d.keys())
        assert (other ^ m.keys()) == (other ^ d.keys())
    assert (["a", "z"] - m.keys()) == (["a", "z"] - d.keys())


def test_view_comparisons(mapping_cls):
    d = {"a": 1, "b": 2}
    m = mapping_cls(d)
    for other in ({"a", "b"}, {"a"}, {"a", "b", "c"}, frozenset(), d.keys(), m.keys()):
        for op in (operator.eq, operator.ne, operator.lt, operator.le, operator.gt,
                   operator.ge):
            assert op(m.keys(), other) == op(d.keys(), other), (op, other)
            assert op(other, m.keys()) == op(other, d.keys()), (op, other)
    assert m.keys() == d.keys() and m.items() == d.items()
    assert m.items() == {("a", 1), ("b", 2)}
    assert (m.items() & {("a", 1)}) == {("a", 1)}
    assert m.values() != m.values()       # like dict: values views compare by identity
    assert (m.keys() == [1]) is False


def test_items_view_intersection_needs_only_the_other_side_hashable(mapping_cls):
    for c in ({"a": [1]}, mapping_cls(a=[1])):
        assert (c.items() & []) == set()
        assert (c.items() & [["x"]]) == set()
    assert (mapping_cls({1: "a"}).keys() & {1.0}) == ({1: "a"}.keys() & {1.0})


@pytest.mark.parametrize("other", [{1, 2}, frozenset({1}), {1: 2, 3: 4}.keys(), [1, 2], {1},
                                   {("a", 0)}, [("a", 0)], set()])
def test_views_isdisjoint_hashes_like_dict(mapping_cls, other):
    # dict iterates the smaller of a set / dict view and the items view: with unhashable
    # values, a larger set makes it hash the view's items (TypeError)
    def run(cls):
        return (outcome(lambda: cls(a=[]).items().isdisjoint(other))[0],
                outcome(lambda: cls(a=1).keys().isdisjoint(other)))
    assert run(mapping_cls) == run(dict)
    assert mapping_cls(a=1).keys().isdisjoint(mapping_cls(b=1).keys()) is True
    v = mapping_cls(a=1).keys()
    assert v.isdisjoint(v) is False and mapping_cls().keys().isdisjoint(mapping_cls().keys())


def test_views_ignore_subclass_overrides(mapping_cls):
    class Sub(mapping_cls):
        def __contains__(self, k):
            return True

    class DSub(dict):
        def __contains__(self, k):
            return True

    assert ("zz" in Sub().keys()) is ("zz" in DSub().keys()) is False


def test_view_types_cannot_be_made_by_hand(mapping_cls):
    m = mapping_cls(a=1)
    for view, dview in zip((m.keys(), m.values(), m.items()), ({}.keys(), {}.values(),
                                                             {}.items())):
        V = type(view)
        for arg in (None, {"a": 1}):
            assert outcome(type(dview), arg)[0] is TypeError
            if mapping_cls is HashMap:
                assert outcome(V, arg)[0] is TypeError
            else:
                # (not documented; noted in the issue-12 report) SnapshotMap's views are
                # collections.abc classes: made over anything, the first use raises
                with pytest.raises(TypeError):
                    list(V(arg))


# ---------------------------------------------------------------- equality and operators

def test_equality(mapping_cls):
    m = mapping_cls(a=1, b=2)
    assert m == {"b": 2, "a": 1} and {"a": 1, "b": 2} == m
    for other_cls in MAPS:
        assert m == other_cls(b=2, a=1) and m != other_cls(a=1)
    assert m == types.MappingProxyType({"a": 1, "b": 2})
    assert m != {"a": 1, "b": 3} and not (m == [("a", 1), ("b", 2)])
    assert (m == 5) is False and (m != 5) is True
    nan = float("nan")
    assert mapping_cls(x=nan) == {"x": nan}   # identical values compare equal, as in dict


def test_equality_with_dict_subclasses_reads_their_storage(mapping_cls):
    dd = collections.defaultdict(int, y=0)
    assert (mapping_cls(x=0) == dd) is ({"x": 0} == dd) is False
    assert "x" not in dd                      # __missing__ was not called
    assert (mapping_cls(x=0) == collections.Counter(y=0)) is False
    assert mapping_cls(y=0) == collections.Counter(y=0)

    class ItemsLies(dict):                    # dict == compares storage, not items()
        def items(self):
            return [("a", 2)]

    assert (mapping_cls(a=1) == ItemsLies(a=1)) is (dict(a=1) == ItemsLies(a=1)) is True


def test_equality_with_other_mappings_defers_to_them(mapping_cls):
    class Raising(abc.Mapping):
        def __getitem__(self, k):
            raise KeyError(k)

        def __len__(self):
            return 1

        def __iter__(self):
            return iter(["a"])

    for c in ({"a": 1}, mapping_cls(a=1)):
        with pytest.raises(KeyError):
            c == Raising()
    ud = collections.UserDict(a=1)
    assert (mapping_cls(a=1) == ud) is ({"a": 1} == ud) is True
    assert mapping_cls(a=1) != collections.UserDict(a=2)


def test_or_and_ior(mapping_cls):
    a, b = {"a": 1, "b": 2}, {"b": 3, "c": 4}
    ma = mapping_cls(a)
    for other in (b, mapping_cls(b)):
        r = ma | other
        assert type(r) is mapping_cls and list(r.items()) == list((a | b).items())
    r = b | ma
    assert type(r) is mapping_cls and list(r.items()) == list((b | a).items())
    assert list(ma.items()) == list(a.items())          # unchanged
    ma |= [("z", 0)]
    assert list(ma.items()) == [("a", 1), ("b", 2), ("z", 0)]
    assert outcome(lambda: ma | [("x", 1)]) == outcome(lambda: a | [("x", 1)])
    m2, d2 = mapping_cls(a), dict(a)

    def ior(c):
        c |= 5
    assert outcome(ior, m2)[0] is outcome(ior, d2)[0] is TypeError
    assert type(SUBCLASS[mapping_cls](a) | b) is mapping_cls      # as dict: a plain one


def noisy(base):
    class Noisy(base):
        calls = []

        def copy(self):
            self.calls.append("copy")
            return base()

        def update(self, *args, **kwargs):
            self.calls.append("update")

        def keys(self):
            self.calls.append("keys")
            return super().keys()
    return Noisy


@pytest.mark.parametrize("source", ["dict", "same", "other"])
def test_operators_do_not_call_a_subclasss_copy_or_update(mapping_cls, source):
    base = {"dict": dict, "same": mapping_cls,
            "other": SnapshotMap if mapping_cls is HashMap else HashMap}[source]
    cls = noisy(base)
    a = cls({"a": 1})
    r = a | {"b": 2}
    assert type(r) is base and r == {"a": 1, "b": 2}
    a |= {"c": 3}
    assert a == {"a": 1, "c": 3}
    assert mapping_cls(a) == {"a": 1, "c": 3}  # keys() not called: __iter__ is inherited
    h = mapping_cls()
    h.update(a)
    assert h == {"a": 1, "c": 3}
    assert {"z": 0} | a == {"z": 0, "a": 1, "c": 3}
    if source == "other":
        # read as any Mapping (dict reads a non-dict mapping through keys() too)
        assert set(cls.calls) <= {"keys"}
    else:
        assert cls.calls == []


# ---------------------------------------------------------------- update's sources

def test_update_from_a_keys_object_reads_the_keys_first(mapping_cls):
    class Half:
        def keys(self):
            yield "a"
            raise ValueError("boom")

        def __getitem__(self, k):
            return 1

    same(mapping_cls, lambda c: c.update(Half()))

    class BadKeys:
        def keys(self):
            return 5

    m = same(mapping_cls, lambda c: c.update(BadKeys()))
    with pytest.raises(TypeError, match=r"BadKeys.keys\(\) returned a non-iterable"):
        m.update(BadKeys())

    class NoneKeys(list):
        keys = None

    same(mapping_cls, lambda c: c.update(NoneKeys([("a", 1)])))


def test_subclass_with_overridden_iteration_is_read_through_keys(mapping_cls):
    def lying(base):
        class S(base):
            def keys(self):
                return ["a"]

            def __iter__(self):
                return iter(["a"])

            def __getitem__(self, k):
                return 99
        return S

    want = dict(lying(dict)(a=1, b=2))
    assert want == {"a": 99}
    for base in (dict, HashMap, SnapshotMap):
        src = lying(base)(a=1, b=2)
        assert list(mapping_cls(src).items()) == list(want.items())
        same(mapping_cls, lambda c: c.update(src), {"z": 1})


def test_dict_subclasses_are_read_like_dict_reads_them(mapping_cls):
    class GetitemLies(dict):                 # keeps dict's __iter__: storage is read
        def __getitem__(self, key):
            return "lie"

    class KeysLies(dict):                    # keeps dict's __iter__: keys() is ignored
        def keys(self):
            return ["nope"]

    class IterOverridden(dict):              # __iter__ overridden: keys() + __getitem__
        def __iter__(self):
            return iter(list(dict.keys(self))[::-1])

        def keys(self):
            return list(dict.keys(self))[::-1]

        def __getitem__(self, key):
            return ("got", dict.__getitem__(self, key))

    class LenLies(dict):
        def __len__(self):
            return 10 ** 9                   # never trusted (presizing)

    for cls in (GetitemLies, KeysLies, IterOverridden, LenLies):
        src = cls((i, i) for i in range(100))
        for base in ({}, {5: 0, "x": 1}):
            same(mapping_cls, lambda c: c.update(src), base)
        assert list(mapping_cls(src).items()) == list(dict(src).items())


def lying_len(base):
    class LyingLen(base):
        def __init__(self, *args, length, **kwargs):
            super().__init__(*args, **kwargs)
            self.length = length

        def __len__(self):
            if isinstance(self.length, BaseException):
                raise self.length
            return self.length
    return LyingLen


@pytest.mark.parametrize("base", [dict, HashMap, SnapshotMap])
@pytest.mark.parametrize("length", [2 ** 40, 10 ** 6, ValueError("no len")])
def test_construction_and_update_read_the_true_size(mapping_cls, base, length):
    src = lying_len(base)({"a": 1}, length=length)
    assert dict(src) == {"a": 1}            # dict never calls __len__ here
    built = mapping_cls(src)
    updated = mapping_cls()
    updated.update(src)
    for m in (built, updated):
        assert m == {"a": 1}
        check(m)
        if mapping_cls is HashMap:
            assert m.capacity < 100             # not presized from the lie


@pytest.mark.parametrize("same_type", [False, True])
def test_equality_reads_the_true_size(mapping_cls, same_type):
    base = mapping_cls if same_type else dict
    other = lying_len(base)({1: 1}, length=5)
    assert {1: 1} == other                  # dict reads the true sizes (ma_used)
    assert mapping_cls({1: 1}) == other
    assert not (mapping_cls({1: 1}) != other)
    assert mapping_cls({1: 1, 2: 2}) != other
    other = lying_len(base)({1: 1}, length=ValueError("no len"))
    assert mapping_cls({1: 1}) == other


def test_update_from_self(mapping_cls):
    same(mapping_cls, lambda c: c.update(c), pairs(20))
    same(mapping_cls, lambda c: c.__ior__(c), pairs(20))


# ---------------------------------------------------------------- __missing__

def missing_subclasses(base):
    """Subclasses of base with a __missing__: a method, a staticmethod, None."""
    class Default(base):
        def __missing__(self, key):
            return key * 2

    class StaticMissing(base):
        @staticmethod
        def __missing__(key):
            return ("static", key)

    class NoneMissing(base):
        __missing__ = None

    return Default, StaticMissing, NoneMissing


def test_missing_is_consulted_for_subclasses(mapping_cls):
    subs, dsubs = missing_subclasses(mapping_cls), missing_subclasses(dict)
    m = subs[0](a=1)
    assert m["a"] == 1 and m.get("q") is None and "zz" not in m
    assert outcome(lambda: mapping_cls()["x"]) == outcome(lambda: {}["x"])
    if snapshot_semantics(mapping_cls):
        # documented: "__missing__ is not consulted for subclasses"
        for cls in subs:
            with pytest.raises(KeyError):
                cls()["zz"]
        return
    assert m["zz"] == dsubs[0]()["zz"] == "zzzz" and "zz" not in m
    assert subs[1]()["k"] == dsubs[1]()["k"] == ("static", "k")
    assert outcome(lambda: subs[2]()["x"]) == outcome(lambda: dsubs[2]()["x"])
    assert outcome(lambda: subs[2]()["x"])[1] == "'NoneType' object is not callable"


# ---------------------------------------------------------------- copying and pickling

@pytest.mark.parametrize("proto", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_roundtrip(mapping_cls, proto):
    m = mapping_cls(pairs(300))
    del m["k5"]
    r = pickle.loads(pickle.dumps(m, proto))
    assert type(r) is mapping_cls and list(r.items()) == list(m.items())
    check(r)
    s = SUBCLASS[mapping_cls](a=1)
    s.tag = "x"
    r = pickle.loads(pickle.dumps(s, proto))
    assert type(r) is SUBCLASS[mapping_cls] and r == {"a": 1} and r.tag == "x"


def test_copy_and_deepcopy(mapping_cls):
    inner = [1]
    m = mapping_cls(a=inner)
    c = copy.copy(m)
    assert c == m and c["a"] is inner and type(c) is mapping_cls
    dc = copy.deepcopy(m)
    assert dc == m and dc["a"] is not inner
    sub = SUBCLASS[mapping_cls]
    s = sub(a=inner)
    assert type(copy.copy(s)) is sub and type(copy.deepcopy(s)) is sub
    assert type(s.copy()) is mapping_cls            # as dict.copy() for subclasses
    if mapping_cls is HashMap:
        # documented for HashMap: instances accept attributes (dict's do not)
        m.copy = lambda: "not a copy"                  # an instance attribute named copy
        c = copy.copy(m)
        assert type(c) is mapping_cls and c == {"a": inner} and c.copy() == "not a copy"
    else:
        assert outcome(setattr, m, "copy", None)[0] is outcome(setattr, {}, "copy", None)[0]


def test_pickle_and_copy_of_self_references(mapping_cls):
    m = mapping_cls()
    m["self"] = m
    m["list"] = [m]
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        m2 = pickle.loads(pickle.dumps(m, proto))
        assert m2["self"] is m2 and m2["list"][0] is m2
    c = copy.deepcopy(m)
    assert c["self"] is c and c["list"][0] is c and c is not m


def test_pickle_and_copy_of_subclasses_like_dict_subclasses(mapping_cls):
    n = NEEDS_ARGS[mapping_cls](5, a=1)
    n.extra = [1]
    del n["added_by_init"]
    for clone in (*(pickle.loads(pickle.dumps(n, p))
                    for p in range(pickle.HIGHEST_PROTOCOL + 1)),
                  copy.copy(n), copy.deepcopy(n)):
        assert type(clone) is NEEDS_ARGS[mapping_cls] and clone == {"a": 1}
        assert (clone.x, clone.extra) == (5, [1])
    s = SLOTTED[mapping_cls](a=1)
    s.s = "slot"
    for clone in (pickle.loads(pickle.dumps(s)), copy.copy(s), copy.deepcopy(s)):
        assert clone == {"a": 1} and clone.s == "slot"
    m = mapping_cls(a=1)
    if mapping_cls is HashMap:
        # documented for HashMap: instances accept attributes, which copies keep
        m.tag = "t"
        assert copy.copy(m).tag == copy.deepcopy(m).tag == \
            pickle.loads(pickle.dumps(m)).tag == "t"
    else:
        assert outcome(setattr, m, "tag", "t")[0] is outcome(setattr, {}, "tag", "t")[0] \
            is AttributeError


ITERATORS = [iter, reversed, lambda c: iter(c.keys()), lambda c: iter(c.values()),
             lambda c: iter(c.items()), lambda c: reversed(c.values()),
             lambda c: reversed(c.items())]


@pytest.mark.parametrize("make", ITERATORS)
def test_iterators_pickle_and_copy_without_being_consumed(mapping_cls, make):
    m = mapping_cls({i: str(i) for i in range(50)})
    d = dict(m)
    sources = [m, m.snapshot()] if snapshot_semantics(mapping_cls) else [m]
    for src in sources:                   # (and a SnapshotMap's Snapshot's iterators)
        check_iterator_pickle_and_copy(make(src), make(d))


def check_iterator_pickle_and_copy(it, ref):
    for _ in range(7):
        assert next(it) == next(ref)
    assert list(copy.copy(it)) == list(copy.copy(ref))
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        assert list(pickle.loads(pickle.dumps(it, proto))) == \
            list(pickle.loads(pickle.dumps(ref, proto)))
    assert it.__length_hint__() == ref.__length_hint__()
    assert list(it) == list(ref)          # the original is where it was
    assert list(pickle.loads(pickle.dumps(it))) == []


# ---------------------------------------------------------------- iteration and writes

def test_changing_the_size_during_iteration(mapping_cls):
    def grow(c, keys=iter):
        for k in keys(c):
            c[k + 100] = 1

    def delete_and_add(c, keys=iter):
        for k in keys(c):
            del c[k]
            c[k + 1] = None

    for loop, init in ((grow, dict.fromkeys(range(10))), (delete_and_add, {0: 0})):
        if snapshot_semantics(mapping_cls):
            # documented: iterators read the version published when they were made and
            # never raise "changed size during iteration": as a dict looping over a copy
            m, d = mapping_cls(init), dict(init)
            loop(m)
            loop(d, keys=list)
            assert list(m.items()) == list(d.items())
            check(m)
        else:
            same(mapping_cls, loop, init)


def _iter_after(cls, make_iter, mutate):
    m = cls(a=1, b=2, c=3, d=4)
    it = make_iter(m)
    first = next(it)
    mutate(m)
    return first, outcome(list, it)


def _refill(m):
    m.clear()
    m.update(w=1, x=1, y=1, z=1)


def _pop_and_put_back(m):
    k, v = m.popitem()
    m[k] = v


def _pop_and_insert(m):
    m.popitem()
    m["z"] = 0


@pytest.mark.parametrize("make_iter", ITERATORS)
@pytest.mark.parametrize("mutate", [_pop_and_insert, _pop_and_put_back, _refill])
def test_iteration_after_popitem_or_clear_at_the_same_size(mapping_cls, make_iter, mutate):
    # the size is restored before the next step, so dict goes on from its position
    got = _iter_after(mapping_cls, make_iter, mutate)
    if snapshot_semantics(mapping_cls):
        # documented: the iterator goes on over the version it was made on
        assert got == _iter_after(dict, make_iter, lambda m: None)
    else:
        assert got == _iter_after(dict, make_iter, mutate)


def test_value_updates_during_iteration_keep_the_iteration(mapping_cls):
    for make in (iter, reversed):
        m, d = mapping_cls.fromkeys(range(3000), 0), dict.fromkeys(range(3000), 0)
        for c in (m, d):
            for k in list(c)[::3]:
                del c[k]
        seen = []
        for c in (m, d):
            seen.append([])
            for k in make(c):               # updates of existing keys: no size change
                c[k] = -1
                seen[-1].append(k)
        assert seen[0] == seen[1] and list(m.items()) == list(d.items())
        check(m)


# ---------------------------------------------------------------- hostile keys and values

class Exc(Exception):
    pass


class BadHash:
    def __hash__(self):
        raise Exc("hash")


class BadEq:
    def __init__(self, h=1000):
        self.h = h

    def __hash__(self):
        return self.h

    def __eq__(self, other):
        raise Exc("eq")


OPS = {
    "get": lambda c, k: c[k], "set": lambda c, k: c.__setitem__(k, 1),
    "del": lambda c, k: c.__delitem__(k), "contains": lambda c, k: k in c,
    "pop": lambda c, k: c.pop(k), "pop_default": lambda c, k: c.pop(k, None),
    "setdefault": lambda c, k: c.setdefault(k), "dotget": lambda c, k: c.get(k),
    "update": lambda c, k: c.update({k: 1}), "update_pairs": lambda c, k: c.update([(k, 1)]),
    "keys_contains": lambda c, k: k in c.keys(), "items_contains": lambda c, k: (k, 1) in c.items(),
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_raising_hash_leaves_the_map_unchanged(mapping_cls, op):
    same(mapping_cls, lambda c: OPS[op](c, BadHash()), dict.fromkeys(range(100)))


@pytest.mark.parametrize("op", sorted(OPS))
def test_raising_eq_leaves_the_map_unchanged(mapping_cls, op):
    resident = BadEq()                    # resident key whose __eq__ raises
    init = [(resident, "bad")] + [(i, i) for i in range(50)]
    got = same(mapping_cls, lambda c: OPS[op](c, BadEq()), init)  # same hash: compared
    assert OPS["contains"](got, resident)  # identity first: no comparison


def test_eq_that_always_inserts_during_a_lookup_terminates(mapping_cls):
    def run(cls):
        m = cls()
        calls = [0]

        class K:
            def __init__(self, v):
                self.v = v

            def __hash__(self):
                return 5

            def __eq__(self, o):
                calls[0] += 1
                m[("log", calls[0])] = 1       # a read's comparison may write
                return self.v == o.v

        m[K(1)] = 1
        return m.get(K(2)), calls[0], len(m)

    assert run(mapping_cls) == run(dict) == (None, 1, 2)


class Endless(Exception):
    pass


def test_eq_that_writes_and_pops_does_not_keep_a_lookup_going(mapping_cls):
    # every comparison inserts and pops: dict's lookup goes on past such changes (HashMap
    # once restarted after every popitem, so the lookup never ended)
    def run(cls):
        m = cls()
        calls = [0]

        class K:
            def __hash__(self):
                return 7

            def __eq__(self, other):
                calls[0] += 1
                if calls[0] > 10_000:
                    raise Endless
                m[("pad", calls[0] % 5)] = 0
                m.popitem()
                return False

        for i in range(50):
            m[i] = i
        first = outcome(m.__setitem__, K(), 1)    # compared with the int key 7
        probe = K()
        out = [first[0], probe in m, m.get(probe, "absent"),
               outcome(m.__setitem__, probe, 2)]
        if out[-1][0] == "ok":
            out.append(m[probe])
        if cls is not dict:
            check(m)
        return out

    got = run(mapping_cls)
    if snapshot_semantics(mapping_cls):
        # reads may write (no lock held); documented: a write from a key's __eq__ into
        # the same map during a write raises RuntimeError
        assert got[0] is got[3][0] is RuntimeError
        assert got[1:3] == run(dict)[1:3] == [False, "absent"]
    else:
        assert got == run(dict) == ["ok", False, "absent", ("ok", None), 2]


def test_eq_that_clears_the_map_during_an_insert(mapping_cls):
    # CPython test_mutating_lookup: __eq__ clears the map while another key is inserted
    def run(cls):
        class NotEqual:
            def __eq__(self, other):
                m.clear()
                return False

            def __hash__(self):
                return 0

        m = cls()
        key1, key2 = NotEqual(), NotEqual()
        m[key1] = 1
        r = outcome(m.__setitem__, key2, 2)
        check(m) if cls is not dict else None
        return r, [(type(k).__name__, v) for k, v in m.items()]

    if snapshot_semantics(mapping_cls):
        # documented: a write from a key's __eq__ into the same map during a write raises
        # RuntimeError (dict would apply it); the map is unchanged
        (exc, msg), items = run(mapping_cls)
        assert exc is RuntimeError and "re-entrant" in msg and len(items) == 1
    else:
        assert run(mapping_cls) == run(dict)


def test_eq_clearing_the_other_map_during_a_merge(mapping_cls):
    # CPython test_merge_and_mutate: the source shrinks while being merged
    def run(cls):
        class X:
            def __hash__(self):
                return 0

            def __eq__(self, o):
                other.clear()
                return False

        other = cls((i, 0) for i in range(1, 1337))
        other[X()] = 0
        m = cls({X(): 0, 1: 1})
        r = outcome(m.update, other)
        if cls is not dict:
            check(m)
            check(other)
        return r[0], len(other), len(m)

    got = run(mapping_cls)
    if snapshot_semantics(mapping_cls):
        # documented: a SnapshotMap is read through the version published when the read
        # began ("never raise 'changed size during iteration'"): the merge takes all of it
        assert got == ("ok", 0, 1338)
    else:
        assert got[:2] == run(dict)[:2] == (RuntimeError, 0)


def test_items_contains_whose_eq_clears_the_map(mapping_cls):
    # CPython test_dictitems_contains_use_after_free
    def run(cls):
        class X:
            def __eq__(self, other):
                m.clear()
                return NotImplemented

            __hash__ = object.__hash__

        m = cls({0: set()})
        r = (0, X()) in m.items()
        if cls is not dict:
            check(m)
        return r, len(m)

    assert run(mapping_cls) == run(dict)


def test_equal_operator_modifying_its_operands(mapping_cls):
    # CPython test_equal_operator_modifying_operand: must not crash, and like dict is True
    def run(cls):
        class X:
            def __del__(self):
                b.clear()

            def __eq__(self, other):
                a.clear()
                return True

            def __hash__(self):
                return 13

        a = cls({X(): 0})
        b = cls({X(): X()})
        return a == b

    assert run(mapping_cls) is run(dict) is True


def test_replaced_value_whose_del_writes_to_the_map(mapping_cls):
    # CPython test_reentrant_insertion: a replaced value's __del__ writes to the map
    def run(cls):
        class Mut:
            def __del__(self):
                m.clear()
                m["x"] = 1

        m = cls()
        m["a"] = Mut()
        m["a"] = 2           # old value dies after the map is consistent
        first = list(m.items())
        m["b"] = Mut()
        del m["b"]
        if cls is not dict:
            check(m)
        return first, list(m.items())

    assert run(mapping_cls) == run(dict) == ([("x", 1)], [("x", 1)])


def test_value_del_that_clears_the_map_during_items_iteration(mapping_cls):
    # CPython test_oob_indexing_dictiter_iternextitem
    def run(cls):
        class X(int):
            def __del__(self):
                m.clear()

        m = cls((i, X(i)) for i in range(8))

        def iterate():
            for k, v in m.items():
                m[k] = v * 0
        r = outcome(iterate)[0]
        if cls is not dict:
            check(m)
        return r

    if snapshot_semantics(mapping_cls):
        # documented: the iterator reads its version; it never raises "changed size"
        assert run(mapping_cls) == "ok"
    else:
        assert run(mapping_cls) is run(dict) is RuntimeError


def test_collections_during_popitem(mapping_cls):
    m = mapping_cls()
    for i in range(100):
        m[i] = [i]
    while m:
        gc.collect(0)
        k, v = m.popitem()
        assert v == [k]
        check(m)


def test_keys_whose_hash_changes_after_insert_do_not_crash(mapping_cls):
    class Drift:
        def __init__(self):
            self.h = 1

        def __hash__(self):
            self.h += 1
            return self.h

    m = mapping_cls()
    keys = [Drift() for _ in range(500)]
    for k in keys:
        m[k] = 1
    assert len(m) == 500
    for k in keys:
        k in m                     # may or may not be found (identity is checked first)
        m.pop(k, None)
    check(m, rehash=False)
    m.clear()
    assert len(m) == 0
