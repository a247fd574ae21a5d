"""Bulk operations (copy, constructors, update, fromkeys, ==) take fast paths that must keep
dict's semantics exactly: same items and order, independent copies, hostile keys, dict
subclasses, errors half-way."""
import sys
import sysconfig

import pytest

from fastmaps import HashMap


def mixed(n):
    out = []
    for i in range(n):
        out.append((f"s{i}", i) if i % 3 else (i * 7919, i))
    return out


@pytest.mark.parametrize("n", [0, 1, 7, 100, 5000, 70_000])
def test_copy_of_dense_map_is_an_independent_equal_map(n):
    m = HashMap(mixed(n))
    c = m.copy()
    c._check()
    assert list(c.items()) == list(m.items())
    assert type(c) is HashMap
    c["new"] = 1
    if n:
        del c[next(iter(m))]
    c._check()
    m._check()
    assert list(m.items()) == mixed(n)


def test_copy_refcounts():
    k, v = object(), object()
    m = HashMap({k: v})
    base = sys.getrefcount(k), sys.getrefcount(v)
    c = m.copy()
    assert (sys.getrefcount(k), sys.getrefcount(v)) == (base[0] + 1, base[1] + 1)
    del c
    assert (sys.getrefcount(k), sys.getrefcount(v)) == base


@pytest.mark.parametrize("keep", [lambda i: i % 4, lambda i: i % 3 == 0])
def test_copy_of_map_with_holes_and_during_migration(tiny, keep):
    # few holes: the layout is copied; more than a third: entries are appended one by one
    m = HashMap(mixed(300))
    for i in range(300):
        if not keep(i):
            del m[mixed(300)[i][0]]
    for i in range(40):
        m[("t", i)] = i
        c = m.copy()
        c._check()
        assert list(c.items()) == list(m.items())
        assert all(c[k] == v for k, v in m.items())     # each key found by its hash


@pytest.mark.parametrize("n", [0, 5, 3000])
def test_hashmap_from_hashmap_and_update_into_empty(n):
    src = HashMap(mixed(n))
    for target in (HashMap(src), HashMap()):
        if not len(target):
            target.update(src)
        target._check()
        assert list(target.items()) == list(src.items())
    # an empty map that held items before (storage, holes) takes the fast path too
    t = HashMap(mixed(50))
    t.clear(keep_capacity=True)
    t.update(src)
    t._check()
    assert list(t.items()) == list(src.items())
    t = HashMap(mixed(50))
    for k, _ in mixed(50):
        del t[k]
    t.update(src)
    t._check()
    assert list(t.items()) == list(src.items())


def test_copies_between_hashmaps_reuse_stored_hashes():
    class H:
        calls = 0

        def __hash__(self):
            H.calls += 1
            return 1

    keys = [H() for _ in range(50)]
    src = HashMap.fromkeys(keys)
    H.calls = 0
    dst = HashMap(src)
    dst.update(src)
    assert dst == src and src == dst and src.copy() == src
    assert H.calls == 0


def _kinds_at(n, every, kind):
    """n keys, exact str except every `every`-th, which is of `kind` (an int, a tuple, or a
    key whose hash is user code)."""
    out = []
    for i in range(n):
        if every and i % every == every - 1:
            out.append({"int": i * 7919, "tuple": ("t", i), "user": HashHook(i)}[kind])
        else:
            out.append(f"s{i}")
    return out


@pytest.mark.parametrize("kind", ["int", "tuple", "user"])
@pytest.mark.parametrize("every", [0, 1, 5, 16, 17, 33])
@pytest.mark.parametrize("n", [1, 15, 16, 17, 40, 2100, 5000])
def test_dict_merged_into_empty_map_by_batches(tuning, kind, every, n):
    # a dict is appended into an empty map in batches: keys of other kinds (a segment's
    # first non-str key gives it a hash array), keys whose hash is user code (a batch ends
    # early) and segment boundaries (tiny tuning) at every position of a batch
    d = {k: i for i, k in enumerate(_kinds_at(n, every, kind))}
    for m, expect in ((HashMap(d), {}), (HashMap(), {}), (HashMap(x=1), {"x": 1})):
        if len(m) != len(d) or expect:
            m.update(d)
        m._check()
        expect.update(d)
        assert list(m.items()) == list(expect.items())
        for k, v in d.items():
            assert m[k] == v
    assert HashMap(d) == d and d == HashMap(d)


class HashHook:
    """A key with value equality (tests replace its __hash__ to run user code)."""

    def __init__(self, v):
        self.v = v

    def __hash__(self):
        return hash(self.v)

    def __eq__(self, other):
        return isinstance(other, HashHook) and self.v == other.v


# Where the C API gives a dict's stored hashes (3.10-3.12, GIL builds) HashMap reads them,
# as dict.update does: no key's __hash__ runs while a dict is merged. Elsewhere each key
# is hashed, and the tests below check what user code in that __hash__ may do.
STORED_HASHES = sys.version_info < (3, 13) and not sysconfig.get_config_var("Py_GIL_DISABLED")


def test_update_from_dict_when_a_hash_inserts_into_the_target():
    keys = [HashHook(i) for i in range(50)]
    src = {k: k.v for k in keys}
    target = HashMap()
    # an equal key (a distinct object) inserted by user code half-way: the key from src
    # must then update it, not be appended beside it

    def hook(k):
        target[HashHook(40)] = "inserted"

    # the hook runs in the 20th hash
    count = [0]
    orig = HashHook.__hash__

    def counting_hash(self):
        count[0] += 1
        if count[0] == 20:
            hook(self)
        return hash(self.v)

    HashHook.__hash__ = counting_hash
    try:
        target.update(src)
    finally:
        HashHook.__hash__ = orig
    target._check()
    if STORED_HASHES:
        assert count[0] == 0
        assert [k.v for k in target] == list(range(50))
        return
    assert len(target) == 50
    assert target[HashHook(40)] == 40
    assert [k.v for k in target] == list(range(19)) + [40] + [i for i in range(19, 50) if i != 40]


def test_update_from_dict_that_a_hash_mutates_raises_and_keeps_earlier_items():
    keys = [HashHook(i) for i in range(10)]
    src = {k: k.v for k in keys}
    count = [0]
    orig = HashHook.__hash__

    def mutating_hash(self):
        count[0] += 1
        if count[0] == 5:
            src[HashHook(99)] = 99
        return hash(self.v)

    HashHook.__hash__ = mutating_hash
    try:
        target = HashMap()
        if STORED_HASHES:
            target.update(src)
        else:
            with pytest.raises(RuntimeError):
                target.update(src)
    finally:
        HashHook.__hash__ = orig
    target._check()
    if STORED_HASHES:
        assert count[0] == 0
        assert [k.v for k in target] == list(range(10))
        return
    assert [k.v for k in target] == [0, 1, 2, 3]


@pytest.mark.parametrize("into", ["constructor", "empty update"])
def test_dict_that_a_hash_rearranges_gives_no_duplicate_key(into):
    # a __hash__ that deletes a key already merged and inserts it again (the dict's size
    # does not change; the key comes again at the end of its iteration): once user code
    # has run, the keys that follow are looked up, never appended blindly
    keys = [HashHook(i) for i in range(40)]
    src = {k: k.v for k in keys}
    count = [0]
    orig = HashHook.__hash__

    def rearranging_hash(self):
        count[0] += 1
        if count[0] == 20:
            v = src.pop(keys[3])
            src[keys[3]] = v
        return hash(self.v)

    HashHook.__hash__ = rearranging_hash
    try:
        m = HashMap(src) if into == "constructor" else HashMap()
        if into != "constructor":
            m.update(src)
    finally:
        HashHook.__hash__ = orig
    m._check()
    seen = [k.v for k in m]
    assert len(seen) == len(set(seen)) == len(m)
    assert set(seen) == set(range(40))
    assert all(m[k] == k.v for k in keys)


@pytest.mark.parametrize("kind", ["str", "int"])
def test_update_into_nonempty_and_operators(kind):
    mk = (lambda i: f"k{i}") if kind == "str" else (lambda i: i * 31)
    a = {mk(i): i for i in range(2000)}
    b = {mk(i): -i for i in range(1000, 5000)}
    ma, mb = HashMap(a), HashMap(b)
    for src in (b, mb, list(b.items())):
        t = HashMap(a)
        t.update(src)
        t._check()
        assert list(t.items()) == list({**a, **b}.items())
    assert list((ma | mb).items()) == list((a | b).items())
    t = HashMap(a)
    t |= mb
    t._check()
    assert list(t.items()) == list((a | b).items())
    assert ma == HashMap(a) and ma != mb and ma == a and not (ma == b)
    assert list(HashMap.fromkeys(a, 0).items()) == list(dict.fromkeys(a, 0).items())


def _items_step_reentered_by_a_del(cls):
    # the items iterator reuses its result tuple when the loop dropped it; releasing the
    # tuple's old value runs a __del__ that steps the same iterator twice (dict: the
    # reused tuple is referenced first, so the inner steps make new tuples)
    seen = []
    state = {}

    class D:
        def __del__(self):
            it = state.pop("it", None)
            if it is not None:
                a = next(it)
                b = next(it)
                seen.append(("inner", a, b))

    m = cls({0: D(), 1: 1, 2: 2, 3: 3, 4: 4})
    it = iter(m.items())
    state["it"] = it
    next(it)                       # (0, D), dropped: the tuple can be reused
    m[0] = None                    # now only that tuple holds the D
    x = next(it)
    seen.append(("outer", x))
    seen.append(("rest", list(it)))
    return seen


def test_items_step_reentered_by_a_del_matches_dict():
    assert _items_step_reentered_by_a_del(HashMap) == _items_step_reentered_by_a_del(dict)


def test_reused_items_tuple_is_tracked_when_it_holds_a_container():
    import gc
    m = HashMap([(1, 2), (3, [4])])
    it = iter(m.items())
    first = next(it)
    del first                   # only the iterator holds the tuple: it will be reused
    gc.collect()                # untracks the reused tuple: it holds only ints
    second = next(it)
    assert second == (3, [4])
    assert gc.is_tracked(second)
    m2 = HashMap([(1, 2), (3, 4)])
    it = iter(m2.items())
    del m2
    next(it)
    gc.collect()
    assert next(it) == (3, 4)


class _EqCounter:
    """A value equal to every other _EqCounter, counting the comparisons."""
    calls = 0

    def __eq__(self, other):
        _EqCounter.calls += 1
        return isinstance(other, _EqCounter)

    __hash__ = None


@pytest.mark.parametrize("n", [0, 1, 7, 3000])
def test_equality_of_a_map_and_its_copy_matches_dict(n):
    # == between a map and a copy holding the same objects at the same positions takes a
    # pointer-only shortcut; every way of breaking that must fall back to dict's answer
    nan = float("nan")
    base = {i: (nan if i % 5 == 0 else [i]) for i in range(n)}
    m, d = HashMap(base), dict(base)
    for step in range(6):
        c, dc = m.copy(), d.copy()
        if n:
            k = n // 2
            if step == 1:                  # an equal value that is another object
                c[k] = dc[k] = list(d[k]) if isinstance(d[k], list) else d[k]
            elif step == 2:                # a different value
                c[k] = dc[k] = "other"
            elif step == 3:                # same items, another position for one key
                v = c.pop(k)
                c[k] = v
                v = dc.pop(k)
                dc[k] = v
            elif step == 4:                # one key fewer, one key more
                del c[k], dc[k]
                c[-1] = dc[-1] = 0
            elif step == 5:                # a NaN that is not the same object: unequal
                c[0] = dc[0] = float("nan")
        assert (m == c) == (d == dc), step
        assert (c == m) == (dc == d), step
        assert (m != c) == (d != dc), step


@pytest.mark.parametrize("n", [1, 7, 300])
@pytest.mark.parametrize("step", range(7))
def test_equality_of_maps_in_other_orders_matches_dict(n, step):
    # maps holding the same items in another order take the pass that settles, without
    # user code, each key found by identity with the same value object, and hand the rest
    # to the general comparison: every way of leaving that pass must give dict's answer
    nan = float("nan")
    items = [(i, nan if i % 5 == 0 else [i]) for i in range(n)]
    m, d = HashMap(items), dict(items)
    c, dc = HashMap(items[::-1]), dict(items[::-1])
    k = n // 2
    if step == 1:                          # an equal value that is another object
        c[k] = dc[k] = list(d[k]) if isinstance(d[k], list) else d[k]
    elif step == 2:                        # a different value
        c[k] = dc[k] = "other"
    elif step == 3:                        # an equal key that is another object
        c.pop(k), dc.pop(k)
        c[int(str(k))] = dc[int(str(k))] = d[k]
    elif step == 4:                        # one key fewer, one key more
        del c[k], dc[k]
        c[-1] = dc[-1] = 0
    elif step == 5:                        # a NaN that is not the same object: unequal
        c[0] = dc[0] = float("nan")
    elif step == 6:                        # the first and the last items differ
        c[0] = dc[0] = "first"
        c[n - 1] = dc[n - 1] = "last"
    assert (m == c) == (d == dc), step
    assert (c == m) == (dc == d), step
    assert (m != c) == (d != dc), step


class _Collide:
    """All instances hash alike; __eq__ counts its calls."""
    calls = 0

    def __init__(self, v):
        self.v = v

    def __hash__(self):
        return 7

    def __eq__(self, other):
        _Collide.calls += 1
        return isinstance(other, _Collide) and self.v == other.v


@pytest.mark.parametrize("n", [1, 2, 40])
def test_equality_in_other_order_calls_eq_where_dict_does(n):
    # a key reached only past other entries with its hash is left to the general path,
    # which calls __eq__ on them as dict's lookup does
    keys = [_Collide(i) for i in range(n)]
    seen = []
    for cls in (dict, HashMap):
        a = cls((k, 1) for k in keys)
        b = cls((k, 1) for k in reversed(keys))
        _Collide.calls = 0
        same = a == b
        seen.append((same, _Collide.calls))
    assert seen[1] == seen[0]


def test_equality_shortcut_runs_no_user_code_and_general_path_still_compares():
    vals = [_EqCounter() for _ in range(50)]
    m = HashMap(zip(range(50), vals))
    _EqCounter.calls = 0
    assert m == m.copy()
    assert _EqCounter.calls == 0           # identical objects: no __eq__, as dict
    other = HashMap(zip(range(50), [_EqCounter() for _ in range(50)]))
    assert m == other
    assert _EqCounter.calls == 50          # equal, not identical: each value compared
    assert dict(m) == dict(other)


@pytest.mark.parametrize("build", [
    lambda keys: HashMap([(k, 1) for k in keys]),
    lambda keys: HashMap.fromkeys(keys),
    lambda keys: HashMap.fromkeys(iter(keys)),
    lambda keys: HashMap(zip(keys, keys)),
])
def test_a_bulk_build_leaves_no_migration_it_started_running(build):
    # 100,000 inserts start a growth at 87,381 keys that single writes would still be
    # migrating at the end; the constructor gives it the rest of its steps (O(its input))
    m = build(list(range(100_000)))
    assert not m.stats()["migrating"]
    m._check()


def test_a_small_update_does_not_finish_a_large_migration_at_once():
    m = HashMap.fromkeys(range(87_000))
    k = 10**9
    while not m.stats()["migrating"]:
        m[k] = 1
        k += 1
    left = m.stats()["migration_remaining"]
    assert left > 1000
    m.update([(-1, 1)])                    # one insert: at most one extra step's worth
    assert m.stats()["migrating"]
    assert m.stats()["migration_remaining"] >= left - 2 * 4 - 1
    m._check()


@pytest.mark.parametrize("other_order", [False, True])
def test_equality_respects_a_key_whose_hash_changed(other_order):
    # the same key object, stored under two different hashes: dict looks it up in the
    # other map with the stored hash and does not find it. At the same position (the
    # copy shortcut) and in another order (the identity pass)
    class K:
        h = 1

        def __hash__(self):
            return K.h

    k = K()
    results = []
    for cls in (dict, HashMap):
        K.h = 1
        a = cls({k: 1, "x": 2} if other_order else {k: 1})
        K.h = 2
        b = cls()
        if other_order:
            b["x"] = 2
        b[k] = 1
        results.append((a == b, b == a))
    assert results[1] == results[0]


def test_exhausted_iterators_end_cleanly():
    # the C tp_iternext ends with NULL and no exception set, again and again
    m = HashMap(a=1, b=2)
    for make in (iter, lambda c: iter(c.keys()), lambda c: iter(c.values()),
                 lambda c: iter(c.items()), reversed):
        it = make(m)
        list(it)
        assert list(it) == []
        with pytest.raises(StopIteration):
            next(it)
    assert sys.exc_info() == (None, None, None)
