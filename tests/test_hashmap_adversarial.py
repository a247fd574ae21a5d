"""Hostile keys: raising or re-entrant __hash__/__eq__, collisions, NaN, unhashables.
Many of these follow the hard cases of CPython's test_dict, re-written for HashMap and
checked against dict's own behaviour where dict defines it."""
import gc
import random

import pytest

from fastmaps import HashMap


class Collide:
    """All instances share one hash; equal by value."""
    def __init__(self, v, h=7):
        self.v, self.h = v, h

    def __hash__(self):
        return self.h

    def __eq__(self, other):
        return isinstance(other, Collide) and self.v == other.v

    def __repr__(self):
        return f"Collide({self.v})"


class Exc(Exception):
    pass


class BadHash:
    def __hash__(self):
        raise Exc("hash")


class BadEq:
    def __init__(self, h=1):
        self.h = h

    def __hash__(self):
        return self.h

    def __eq__(self, other):
        raise Exc("eq")


@pytest.fixture
def mk(tuning):
    """Factory of maps, once with default tuning and once with migrations always running."""
    return HashMap


def test_all_colliding_hashes_behave_like_dict(mk):
    m, d = mk(), {}
    rnd = random.Random(5)
    for i in range(3000):
        k = Collide(rnd.randrange(200))
        op = rnd.random()
        if op < 0.6:
            m[k] = d[k] = i
        elif k in d:
            assert m.pop(k) == d.pop(k)
        else:
            with pytest.raises(KeyError):
                m.pop(k)
        if i % 97 == 0:
            m._check()
    assert list(m.items()) == list(d.items())
    m._check()


@pytest.mark.parametrize("op", ["get", "set", "del", "contains", "pop", "setdefault"])
def test_raising_hash_leaves_map_unchanged(mk, op):
    m = mk.fromkeys(range(100))
    before = list(m.items())
    calls = {
        "get": lambda: m[BadHash()], "set": lambda: m.__setitem__(BadHash(), 1),
        "del": lambda: m.__delitem__(BadHash()), "contains": lambda: BadHash() in m,
        "pop": lambda: m.pop(BadHash()), "setdefault": lambda: m.setdefault(BadHash()),
    }
    with pytest.raises(Exc):
        calls[op]()
    assert list(m.items()) == before
    m._check()


@pytest.mark.parametrize("op", ["get", "set", "del", "contains", "pop", "setdefault"])
def test_raising_eq_leaves_map_unchanged(mk, op):
    m = mk()
    m[BadEq(1000)] = "bad"        # resident key whose __eq__ raises
    for i in range(50):
        m[i] = i
    before = list(m.items())
    probe = BadEq(1000)           # same hash: the lookup must compare with the resident
    d = dict(before)
    calls = {
        "get": lambda c: c[probe], "set": lambda c: c.__setitem__(probe, 1),
        "del": lambda c: c.__delitem__(probe), "contains": lambda c: probe in c,
        "pop": lambda c: c.pop(probe), "setdefault": lambda c: c.setdefault(probe),
    }
    with pytest.raises(Exc):
        calls[op](d)               # dict raises too
    with pytest.raises(Exc):
        calls[op](m)
    assert list(m.items()) == before
    m._check()


def test_unhashable_keys_raise_typeerror_like_dict(mk):
    m, d = mk(a=1), {"a": 1}
    for key in ([], {}, set(), HashMap()):
        for fn in (lambda c: c[key], lambda c: c.__setitem__(key, 1),
                   lambda c: c.__delitem__(key), lambda c: key in c,
                   lambda c: c.get(key), lambda c: c.pop(key, None),
                   lambda c: c.setdefault(key)):
            with pytest.raises(TypeError) as em:
                fn(m)
            with pytest.raises(TypeError) as ed:
                fn(d)
            assert str(em.value) == str(ed.value)
    assert dict(m) == d


def test_nan_keys_match_by_identity_only(mk):
    nan = float("nan")
    m, d = mk(), {}
    m[nan] = d[nan] = 1
    m[float("nan")] = d[float("nan")] = 2
    assert len(m) == len(d) == 2
    assert m[nan] == 1 and nan in m
    assert float("nan") not in m
    assert list(m.values()) == list(d.values())


def test_equal_keys_of_different_types_are_one_key_and_first_key_is_kept(mk):
    m, d = mk(), {}
    for c in (m, d):
        c[1] = "int"
        c[1.0] = "float"
        c[True] = "bool"
        c[0.0] = "zero"
        c[-0.0] = "negzero"
        c[False] = "false"
    assert list(m.items()) == list(d.items()) == [(1, "bool"), (0.0, "false")]
    assert type(next(iter(m))) is int


def test_hash_called_once_per_operation_even_across_migrations(mk):
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

    m = mk()
    keys = [Counted(i) for i in range(2000)]
    for k in keys:
        m[k] = 1
    assert Counted.hashes == 2000          # once per insert; migrations never hash
    assert Counted.eqs == 0               # distinct hashes: never compared
    Counted.hashes = 0
    for k in keys:
        assert m[k] == 1
    assert Counted.hashes == 2000 and Counted.eqs == 0   # identity first


def test_eq_that_deletes_during_insert(mk):
    # CPython test_mutating_lookup: __eq__ deletes a key while inserting another
    class NotEqual:
        def __eq__(self, other):
            m.clear()
            return False

        def __hash__(self):
            return 0

    for container in (mk(), {}):
        m = container
        key1, key2 = NotEqual(), NotEqual()
        m[key1] = 1
        m[key2] = 2
        assert list(m.items()) == [(key2, 2)]
        if isinstance(m, HashMap):
            m._check()


@pytest.mark.parametrize("action", ["insert_many", "delete_all", "clear", "clear_keep"])
def test_eq_that_mutates_the_map_mid_lookup_gives_consistent_answer(mk, action):
    class Mutator:
        armed = True

        def __hash__(self):
            return 3

        def __eq__(self, other):
            if Mutator.armed:
                Mutator.armed = False
                if action == "insert_many":
                    for i in range(5000):          # starts and finishes migrations
                        m[("x", i)] = i
                elif action == "delete_all":
                    for k in [k for k in m if not isinstance(k, Mutator)]:
                        del m[k]
                elif action == "clear":
                    m.clear()
                else:
                    m.clear(keep_capacity=True)
            return other is self

    m = mk()
    for i in range(300):
        m[i] = i
    resident = Mutator()
    m[resident] = "resident"
    Mutator.armed = True
    probe = Mutator()
    m[probe] = "probe"            # lookup compares with resident -> mutation mid-lookup
    m._check()
    assert m[probe] == "probe"
    if action == "insert_many":
        assert m[resident] == "resident" and len(m) == 300 + 2 + 5000
    elif action == "delete_all":
        assert len(m) == 2
    else:
        assert list(m) == [probe]


def test_eq_that_clears_during_growth(mk):
    # CPython test_resize2: __eq__ calls clear() during a resize-triggering insert
    class X:
        def __hash__(self):
            return 5

        def __eq__(self, other):
            if resizing:
                d.clear()
            return False

    d = mk()
    resizing = False
    d[X()] = 1
    d[0] = 2
    d[1] = 3
    d[2] = 4
    d[3] = 5
    resizing = True
    d[9] = 6
    d[X()] = 7
    d._check()


def test_mutating_iteration_raises_like_dict(mk):
    for c in (mk({0: 0}), {0: 0}):
        with pytest.raises(RuntimeError):
            for k in c:
                del c[k]
                c[k + 1] = None
    for c in (mk.fromkeys(range(10)), dict.fromkeys(range(10))):
        with pytest.raises(RuntimeError):
            for k in c:
                c[k + 100] = 1


def test_iteration_after_delete_and_insert_never_silently_differs(mk):
    """Delete one key and insert another during iteration (same size). dict's result
    depends on whether a resize happened; HashMap either yields what dict yields or raises
    RuntimeError ("keys changed during iteration"), never a silently different result."""
    for delete, insert in ((9, 99), (0, 99), (5, 5), (0, 0)):
        out = []
        for c in (dict.fromkeys(range(10)), mk.fromkeys(range(10))):
            seen = []
            try:
                for i, k in enumerate(c):
                    seen.append(k)
                    if i == 0:
                        del c[delete]
                        c[insert] = 1
                out.append(("ok", seen))
            except RuntimeError as e:
                assert "keys changed" in str(e) or "changed size" in str(e)
                out.append(("raise", None))
        assert out[1] == out[0] or out[1][0] == "raise", (delete, insert, out)


def test_deleted_and_reinserted_key_during_iteration_does_not_end_it_early(mk):
    # found by review: re-inserting the key just produced moved it to the end, and the
    # iterator, relocating by identity, stopped silently
    m = mk((i, i) for i in range(10))
    seen = []
    with pytest.raises(RuntimeError, match="keys changed"):
        for k in m:
            seen.append(k)
            if k == 0:
                del m[0]
                m[0] = "r"
    assert seen[0] == 0


def test_value_del_that_clears_map_during_iteration(mk):
    # CPython test_oob_indexing_dictiter_iternextitem
    class X(int):
        def __del__(self):
            m.clear()

    m = mk((i, X(i)) for i in range(8))

    def iterate():
        for k, v in m.items():
            m[k] = v * 0
    with pytest.raises(RuntimeError):
        iterate()
    m._check()


def test_items_contains_use_after_free(mk):
    # CPython test_dictitems_contains_use_after_free
    class X:
        def __eq__(self, other):
            m.clear()
            return NotImplemented

        __hash__ = object.__hash__

    m = mk({0: set()})
    (0, X()) in m.items()
    m._check()


def test_merge_and_mutate(mk):
    # CPython test_merge_and_mutate: the source shrinks while being merged
    class X:
        def __hash__(self):
            return 0

        def __eq__(self, o):
            other.clear()
            return False

    other = mk((i, 0) for i in range(1, 1337))
    other[X()] = 0
    m = mk({X(): 0, 1: 1})
    with pytest.raises(RuntimeError):
        m.update(other)
    m._check()


def test_equal_operator_modifying_operand(mk):
    # CPython test_equal_operator_modifying_operand: must not crash, and like dict is True
    class X:
        def __del__(self):
            b.clear()

        def __eq__(self, other):
            a.clear()
            return True

        def __hash__(self):
            return 13

    a = mk({X(): 0})
    b = mk({X(): X()})
    assert a == b


def test_reentrant_insertion_from_value_del(mk):
    # CPython test_reentrant_insertion: a replaced value's __del__ inserts into the map
    class Mut:
        def __del__(self):
            m.clear()
            m["x"] = 1

    m = mk()
    m["a"] = Mut()
    m["a"] = 2           # old value dies after the map is consistent
    m._check()
    assert m == {"x": 1}
    m["b"] = Mut()
    del m["b"]
    m._check()
    assert m == {"x": 1}


def test_gc_during_popitem_result_allocation(mk):
    m = mk()
    for i in range(100):
        m[i] = [i]
    while m:
        gc.collect(0)
        k, v = m.popitem()
        assert v == [k]
        m._check()


def test_huge_reserve_raises_memoryerror_and_map_still_works(mk):
    m = mk(a=1)
    for n in (2**40, 2**62):
        with pytest.raises(MemoryError):
            m.reserve(n)
        with pytest.raises(MemoryError):
            mk.with_capacity(n)
    with pytest.raises(ValueError):
        m.reserve(-1)
    with pytest.raises(OverflowError):
        m.reserve(2**70)
    m["b"] = 2
    assert m == {"a": 1, "b": 2}
    m._check()


def test_keys_whose_hash_changes_after_insert_do_not_crash(mk):
    class Drift:
        def __init__(self):
            self.h = 1

        def __hash__(self):
            self.h += 1
            return self.h

    m = mk()
    keys = [Drift() for _ in range(500)]
    for k in keys:
        m[k] = 1
    assert len(m) == 500
    for k in keys:
        k in m                     # may or may not be found (identity is checked first)
        m.pop(k, None)
    m._check()
    m.clear()
