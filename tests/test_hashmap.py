"""HashMap behaves like dict: construction, protocol, views, operators, pickling, errors;
plus the extras (presizing, keep-capacity clear, shrink, stats) and the incremental
migration guarantees."""
import collections.abc as abc
import copy
import pickle
import sys
import types

import pytest

from fastmaps import HashMap

from ._tuning import tuned


def pairs(n, start=0):
    return [(f"k{i}", i) for i in range(start, start + n)]


# ---------------------------------------------------------------- construction

@pytest.mark.parametrize("args,kwargs", [
    ((), {}),
    (({"a": 1, "b": 2},), {}),
    (([("a", 1), ("b", 2), ("a", 3)],), {}),
    (([["x", 1], "yz"],), {}),
    (({"a": 1},), {"b": 2, "a": 5}),
    ((), {"self": 1, "other": 2}),
    ((types.MappingProxyType({"m": 1}),), {}),
    ((collections_counter := __import__("collections").Counter("abca"),), {}),
])
def test_construction_matches_dict(args, kwargs):
    m, d = HashMap(*args, **kwargs), dict(*args, **kwargs)
    assert list(m.items()) == list(d.items())
    m._check()


def test_construction_from_hashmap_and_keys_object():
    class KeysOnly:
        def keys(self):
            return ["p", "q"]

        def __getitem__(self, k):
            return k * 2

    assert list(HashMap(KeysOnly()).items()) == list(dict(KeysOnly()).items())
    src = HashMap(pairs(100))
    assert list(HashMap(src).items()) == pairs(100)


@pytest.mark.parametrize("bad,exc", [
    ([1, 2], TypeError), ([(1, 2, 3)], ValueError), ([(1,)], ValueError), (5, TypeError),
    ([([], 1)], TypeError),
])
def test_construction_errors_match_dict(bad, exc):
    with pytest.raises(exc):
        dict(bad)
    with pytest.raises(exc):
        HashMap(bad)


def test_too_many_positional_arguments():
    with pytest.raises(TypeError, match="at most 1 argument, got 2"):
        HashMap({}, {})
    with pytest.raises(TypeError):
        HashMap().update({}, {})


def test_fromkeys_and_subclass():
    assert list(HashMap.fromkeys("abc", 0).items()) == list(dict.fromkeys("abc", 0).items())

    class Sub(HashMap):
        pass
    s = Sub.fromkeys([1, 2])
    assert type(s) is Sub and s == {1: None, 2: None}


def test_init_again_updates_like_dict():
    m, d = HashMap(a=1), dict(a=1)
    m.__init__(b=2)
    d.__init__(b=2)
    assert list(m.items()) == list(d.items())


# ---------------------------------------------------------------- protocol

def test_missing_honoured_for_subclasses_only():
    class Default(HashMap):
        def __missing__(self, key):
            return key * 2
    m = Default(a=1)
    assert m["a"] == 1 and m["zz"] == "zzzz" and "zz" not in m
    assert m.get("q") is None
    with pytest.raises(KeyError):
        HashMap()["x"]


def test_keyerror_carries_the_key():
    for c in ({}, HashMap()):
        with pytest.raises(KeyError) as e:
            c[(1, 2)]
        assert e.value.args == ((1, 2),)
        with pytest.raises(KeyError) as e:
            del c["nope"]
        assert e.value.args == ("nope",)


def test_popitem_is_lifo_and_error_on_empty():
    m, d = HashMap(pairs(50)), dict(pairs(50))
    del m["k49"], d["k49"]
    del m["k47"], d["k47"]
    while d:
        assert m.popitem() == d.popitem()
    with pytest.raises(KeyError, match="popitem"):
        m.popitem()
    m._check()


def test_pop_signatures():
    m = HashMap(a=1)
    assert m.pop("b", None) is None
    with pytest.raises(TypeError):
        m.pop()
    with pytest.raises(TypeError):
        m.pop("a", 1, 2)


def test_is_registered_mutable_mapping_not_dict():
    m = HashMap()
    assert isinstance(m, abc.MutableMapping) and isinstance(m, abc.Mapping)
    assert not isinstance(m, dict)
    with pytest.raises(TypeError):
        hash(m)
    assert HashMap[str, int] == types.GenericAlias(HashMap, (str, int))


def test_match_statement_mapping_pattern():
    m = HashMap(kind="point", x=1)
    match m:
        case {"kind": "point", "x": x}:
            assert x == 1
        case _:
            pytest.fail("mapping pattern did not match")


# ---------------------------------------------------------------- views

def test_views_are_live_and_ordered():
    m = HashMap(a=1)
    k, v, i = m.keys(), m.values(), m.items()
    m["b"] = 2
    assert list(k) == ["a", "b"] and list(v) == [1, 2] and list(i) == [("a", 1), ("b", 2)]
    assert len(k) == len(v) == len(i) == 2
    assert list(reversed(k)) == ["b", "a"] and list(reversed(i)) == [("b", 2), ("a", 1)]
    assert list(reversed(v)) == [2, 1]
    assert "a" in k and ("a", 1) in i and ("a", 2) not in i and 2 in v and 3 not in v
    assert isinstance(k, abc.KeysView) and isinstance(i, abc.ItemsView)
    assert isinstance(v, abc.ValuesView)
    assert k.mapping["a"] == 1 and isinstance(k.mapping, types.MappingProxyType)


@pytest.mark.parametrize("other", [{"a", "c"}, ["a", "c"], {"a": 0, "c": 0}.keys(), ("c",)])
def test_keys_view_set_operations_match_dict(other):
    d = {"a": 1, "b": 2}
    m = HashMap(d)
    for op in ("__and__", "__or__", "__sub__", "__xor__"):
        assert getattr(m.keys(), op)(other) == getattr(d.keys(), op)(other)
    assert m.keys().isdisjoint(other) == d.keys().isdisjoint(other)
    if isinstance(other, (set, type({}.keys()))):
        assert (other & m.keys()) == (other & d.keys())
        assert (other - m.keys()) == (other - d.keys())
        assert (other | m.keys()) == (other | d.keys())
        assert (other ^ m.keys()) == (other ^ d.keys())
    assert (["a", "z"] - m.keys()) == (["a", "z"] - d.keys())


def test_view_comparisons_match_dict():
    d = {"a": 1, "b": 2}
    m = HashMap(d)
    for other in ({"a", "b"}, {"a"}, {"a", "b", "c"}, frozenset()):
        for op in ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"):
            assert getattr(m.keys(), op)(other) == getattr(d.keys(), op)(other), (op, other)
    assert m.keys() == d.keys() and m.items() == d.items()
    assert m.items() == {("a", 1), ("b", 2)}
    assert (m.items() & {("a", 1)}) == {("a", 1)}
    assert m.values() != m.values()       # like dict: values views compare by identity
    assert (m.keys() == [1]) is False


def test_view_repr():
    m = HashMap(a=1)
    assert repr(m.keys()) == "hashmap_keys(['a'])"
    assert repr(m.values()) == "hashmap_values([1])"
    assert repr(m.items()) == "hashmap_items([('a', 1)])"


# ---------------------------------------------------------------- equality and operators

def test_equality_with_dict_hashmap_and_other_mappings():
    m = HashMap(a=1, b=2)
    assert m == {"b": 2, "a": 1} and {"a": 1, "b": 2} == m
    assert m == HashMap(b=2, a=1) and m != HashMap(a=1)
    assert m == types.MappingProxyType({"a": 1, "b": 2})
    assert m != {"a": 1, "b": 3} and not (m == [("a", 1), ("b", 2)])
    assert (m == 5) is False and (m != 5) is True
    nan = float("nan")
    assert HashMap(x=nan) == {"x": nan}   # identical values compare equal, as in dict


def test_or_and_ior_match_dict():
    a, b = {"a": 1, "b": 2}, {"b": 3, "c": 4}
    ma = HashMap(a)
    r = ma | b
    assert type(r) is HashMap and list(r.items()) == list((a | b).items())
    r = b | ma
    assert type(r) is HashMap and list(r.items()) == list((b | a).items())
    assert list((ma | HashMap(b)).items()) == list((a | b).items())
    ma |= [("z", 0)]
    assert list(ma.items()) == [("a", 1), ("b", 2), ("z", 0)]
    with pytest.raises(TypeError):
        ma | [("x", 1)]
    with pytest.raises(TypeError):
        ma |= 5


def test_repr_of_self_reference_and_subclass():
    m = HashMap()
    m["me"] = m
    assert repr(m) == "HashMap({'me': ...})"

    class Sub(HashMap):
        pass
    assert repr(Sub(a=1)) == "Sub({'a': 1})" and repr(Sub()) == "Sub()"


# ---------------------------------------------------------------- copying and pickling

@pytest.mark.parametrize("proto", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_roundtrip(proto):
    m = HashMap(pairs(300))
    del m["k5"]
    r = pickle.loads(pickle.dumps(m, proto))
    assert type(r) is HashMap and list(r.items()) == list(m.items())
    r._check()


class PickleSub(HashMap):
    pass


def test_pickle_subclass_with_attributes():
    s = PickleSub(a=1)
    s.tag = "x"
    r = pickle.loads(pickle.dumps(s))
    assert type(r) is PickleSub and r == {"a": 1} and r.tag == "x"


def test_copy_and_deepcopy():
    inner = [1]
    m = HashMap(a=inner)
    c = copy.copy(m)
    assert c == m and c["a"] is inner and type(c) is HashMap
    dc = copy.deepcopy(m)
    assert dc == m and dc["a"] is not inner
    s = PickleSub(a=inner)
    assert type(copy.copy(s)) is PickleSub and type(copy.deepcopy(s)) is PickleSub
    cyc = HashMap()
    cyc["self"] = cyc
    dcc = copy.deepcopy(cyc)
    assert dcc["self"] is dcc


def test_copy_preserves_order_after_deletes_and_during_migration(tiny):
    m = HashMap(pairs(200))
    for k in list(m)[::3]:
        del m[k]
    c = m.copy()
    c._check()
    assert list(c.items()) == list(m.items())


# ---------------------------------------------------------------- sizes and extras

def test_sizeof_reports_storage():
    m = HashMap()
    empty = sys.getsizeof(m)
    m.update(pairs(10000))
    assert sys.getsizeof(m) > empty + 10000 * 16        # all-str keys: no stored hashes
    assert m.stats()["bytes"] == m.__sizeof__()
    str_only = sys.getsizeof(m)
    m[10**12] = 0                                         # one non-str key: its segment
    assert sys.getsizeof(m) == str_only + 2048 * 8        # gets a hash array
    n = HashMap((i, i) for i in range(10000))
    assert sys.getsizeof(n) > empty + 10000 * 24
    assert n.stats()["bytes"] == n.__sizeof__()


def test_with_capacity_reserve_starts_no_migration():
    m = HashMap.with_capacity(50000)
    assert m.capacity >= 50000
    before = m.stats()["migrations"]
    for i in range(50000):
        m[i] = i
    assert m.stats()["migrations"] == before
    m.reserve(120000)
    assert m.capacity >= 120000 and list(m) == list(range(50000))
    m._check()
    with pytest.raises(ValueError):
        HashMap.with_capacity(-1)


def test_large_presized_index_then_migrations():
    # an index of >= 2 MiB comes from its own mapping (with_capacity, reserve and
    # shrink_to_fit ask for huge pages); exercise it through growth, deletes and shrinking
    n = 400_000
    m = HashMap.with_capacity(n)
    assert m.stats()["index_slots"] * 4 >= 2 << 20
    ref = {}
    for i in range(n):
        m[i * 7919] = i
        ref[i * 7919] = i
    m._check()
    m.reserve(3 * n)
    for i in range(0, n, 3):
        del m[i * 7919]
        del ref[i * 7919]
    m.shrink_to_fit()
    m._check()
    assert m == ref and list(m) == list(ref)
    m.clear(keep_capacity=True)
    m.update(ref)
    m._check()
    assert list(m.items()) == list(ref.items())


def test_clear_keep_capacity_refills_without_migrating():
    m = HashMap(pairs(20000))
    slots = m.stats()["index_slots"]
    m.clear(keep_capacity=True)
    assert len(m) == 0 and m.stats()["index_slots"] == slots
    before = m.stats()["migrations"]
    m.update(pairs(20000, 1))
    assert m.stats()["migrations"] == before
    m._check()
    m.clear()
    assert m.stats()["index_slots"] == 0 and m.stats()["bytes"] < 1000


def test_shrink_to_fit_and_automatic_shrinking():
    m = HashMap(pairs(100000))
    big = m.stats()["bytes"]
    for k in list(m)[:-100]:
        del m[k]                      # delete-driven shrink migrations
    m._check()
    mid = m.stats()["bytes"]
    assert mid < big / 4
    m.shrink_to_fit()
    m._check()
    assert m.stats()["bytes"] <= mid and list(m.items()) == pairs(100, 99900)
    assert m.stats()["tombstones"] == 0


def test_stats_fields():
    s = HashMap(pairs(10)).stats()
    for field in ("len", "capacity", "index_slots", "tombstones", "migrating",
                  "migration_remaining", "bytes", "migrations", "forced_finishes"):
        assert field in s
    assert s["len"] == 10


# ---------------------------------------------------------------- incremental migration

def test_each_write_does_bounded_migration_work():
    """During a migration of a 100k+ entry map, no insert advances the migration cursor by
    more than the step budget: the work per write does not depend on the map's size."""
    from fastmaps import _hashmap
    step = _hashmap._set_tuning()["step"]     # (no arguments: reads, changes nothing)
    m = HashMap()
    i = 0
    while True:
        m[i] = i
        i += 1
        migrating, remaining, _, _ = m._progress()
        if migrating and remaining > 100000:
            break
    last = remaining
    steps = 0
    while migrating:
        m[i] = i
        i += 1
        steps += 1
        migrating, remaining, _, forced = m._progress()
        assert last - remaining <= step       # T_STEP positions per write at most
        last = remaining
    assert steps > 100000 // step and forced == 0
    m._check()


def test_lookups_and_iteration_during_migration(tiny):
    m = HashMap()
    d = {}
    for i in range(3000):
        m[i] = d[i] = i
        if i % 5 == 0:
            del m[i // 2], d[i // 2]
        if i % 101 == 0:
            m._check()
            assert all(m[k] == v for k, v in d.items())
            assert list(m) == list(d)
    assert m.stats()["forced_finishes"] == 0


def test_value_updates_during_iteration_finish_migrations_and_keep_iterators_exact():
    m = HashMap()
    for i in range(200000):
        m[i] = i
    for i in range(0, 200000, 3):
        del m[i]
    while not m._progress()[0]:
        m[("fill", len(m))] = 0
    expected = list(m)
    seen = []
    for k in m:                 # each update runs migration steps that move entries
        m[k] = -1
        seen.append(k)
    assert seen == expected
    assert not m._progress()[0]
    m._check()


def test_churn_at_constant_size_keeps_memory_and_probes_bounded():
    m = HashMap()
    for i in range(10000):
        m[i] = i
    sizes = []
    for i in range(10000, 400000):
        m[i] = i
        del m[i - 10000]
        if i % 50000 == 0:
            sizes.append(m.stats()["bytes"])
    m._check()
    assert len(m) == 10000
    assert max(sizes) < 2 * min(sizes)
    assert m.stats()["index_slots"] <= 65536


def test_churn_of_one_key_keeps_the_log_bounded():
    # Deleting and re-inserting the same key reuses its DUMMY slot, so the index never
    # fills; the log must still be compacted (dict bounds its entries by its usable size).
    m = HashMap.fromkeys(range(100), 1)
    for _ in range(200000):
        del m[5]
        m[5] = 1
    m._check()
    st = m.stats()
    assert list(m) == [k for k in range(100) if k != 5] + [5]
    assert st["log_length"] <= st["index_slots"]
    assert st["bytes"] < 64 * 1024
    assert st["forced_finishes"] == 0


def test_inserts_during_a_shrink_from_a_long_log_fit_the_new_index():
    # A shrinking migration starts with a small index while ids up to the old log length
    # are still in use; inserts made while it runs append ids past that length. Every slot
    # must hold its id (and tag) exactly, with no forced finish.
    with tuned("default", hashmap=dict(sync_below=0)):
        m = HashMap.fromkeys(range(20000), 0)
        k = 0
        while True:
            del m[k]
            k += 1
            st = m.stats()
            if st["migrating"] and st["log_length"] > st["index_slots"]:
                break
        m._check()
        for j in range(100000, 100000 + 3000):
            m[j] = 1
            if j % 97 == 0:
                m._check()
        m._check()
        assert m._progress()[3] == 0
        assert list(m) == list(range(k, 20000)) + list(range(100000, 103000))


def test_reentrant_clear_keep_capacity_keeps_the_capacity():
    m = HashMap.with_capacity(1000)

    class ClearsAgain:
        def __del__(self):
            m["x"] = 1          # builds a tiny index of its own ...
            m.clear()           # ... and drops it while the outer clear runs

    m[1] = ClearsAgain()
    m.clear(keep_capacity=True)
    cap = m.capacity
    assert cap >= 1000
    started = m._progress()[2]
    for i in range(cap):
        m[i] = i
    m._check()
    assert m._progress()[2] == started, "an insert within capacity started a migration"


def test_capacity_during_a_migration_is_a_promise():
    with tuned("default", hashmap=dict(sync_below=0)):
        for n in (5000, 20000):
            m = HashMap()
            i = 0
            while not m._progress()[0] or len(m) < n:
                m[i] = i
                i += 1
            while not m._progress()[0]:        # stop inside a running migration
                m[i] = i
                i += 1
            started = m._progress()[2]
            for _ in range(m.capacity - len(m)):
                m[i] = i
                i += 1
            m._check()
            assert m._progress()[2] == started


def test_reverse_iteration_stays_exact_while_updates_move_entries():
    m = HashMap()
    for i in range(100000):
        m[i] = i
    for i in range(0, 100000, 3):
        del m[i]
    while not m._progress()[0]:
        m[("fill", len(m))] = 0
    expected = list(reversed(list(m)))
    seen = []
    for k in reversed(m):
        m[k] = -1
        seen.append(k)
    assert seen == expected
    m._check()


def test_iterator_whose_last_key_vanished_while_entries_moved_raises(tiny):
    m = HashMap.fromkeys(range(200))
    for i in range(0, 200, 2):
        del m[i]                 # holes: the next migration moves entries down
    i = 1000
    while not m._progress()[0]:
        m[i] = i
        i += 1
    it = iter(m)
    first = next(it)
    del m[first]
    m["new"] = 1                 # same size again; these writes move entries
    m["new"] = 2
    with pytest.raises(RuntimeError, match="keys changed"):
        list(it)


def test_popitem_after_a_long_run_of_trailing_holes():
    m, d = HashMap(), {}
    for i in range(50000):
        m[i] = d[i] = i
    for i in range(1000, 50000):          # a long run of holes, not at the tail until the end
        del m[i], d[i]
    for _ in range(10):
        assert m.popitem() == d.popitem()
    m._check()
    assert list(m.items()) == list(d.items())


# ------------------------------------------ found by a differential hunt against dict

def _iter_after(cls, make_iter, mutate):
    m = cls(a=1, b=2, c=3, d=4)
    it = make_iter(m)
    first = next(it)
    mutate(m)
    try:
        return first, list(it)
    except RuntimeError as e:
        return first, f"RuntimeError: {e}".replace(cls.__name__, "<map>")


def _refill(m):
    m.clear()
    m.update(w=1, x=1, y=1, z=1)


def _pop_and_put_back(m):
    k, v = m.popitem()
    m[k] = v


def _pop_and_insert(m):
    m.popitem()
    m["z"] = 0


@pytest.mark.parametrize("make_iter", [iter, reversed, lambda m: iter(m.items()),
                                       lambda m: reversed(m.values())])
@pytest.mark.parametrize("mutate", [_pop_and_insert, _pop_and_put_back, _refill])
def test_iteration_goes_on_by_position_after_popitem_or_clear_like_dict(make_iter, mutate):
    # the size is restored before the next step, so dict goes on from its position
    assert _iter_after(HashMap, make_iter, mutate) == _iter_after(dict, make_iter, mutate)


def test_missing_set_to_none_is_called_like_dict():
    class D(dict):
        __missing__ = None

    class H(HashMap):
        __missing__ = None

    for cls in (D, H):
        with pytest.raises(TypeError, match="'NoneType' object is not callable"):
            cls()["x"]


@pytest.mark.parametrize("other", [{1, 2}, frozenset({1}), {1: 2, 3: 4}.keys(), [1, 2], {1},
                                   {("a", 0)}, [("a", 0)], set()])
def test_items_isdisjoint_hashes_like_dict(other):
    # dict iterates the smaller of a set / dict view and the items view: with unhashable
    # values, a larger set makes it hash the view's items (TypeError)
    def run(cls):
        try:
            return cls(a=[]).items().isdisjoint(other)
        except TypeError as e:
            return type(e)
    assert run(HashMap) == run(dict)
    assert HashMap(a=1).keys().isdisjoint(HashMap(b=1).keys()) is True
    v = HashMap(a=1).keys()
    assert v.isdisjoint(v) is False and HashMap().keys().isdisjoint(HashMap().keys())
