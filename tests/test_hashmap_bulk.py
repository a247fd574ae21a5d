"""Bulk operations (copy, constructors, update, fromkeys, ==) take fast paths that must keep
dict's semantics exactly: same items and order, independent copies, hostile keys, dict
subclasses, errors half-way."""
import sys

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


def test_copy_of_map_with_holes_and_during_migration(tiny):
    m = HashMap(mixed(300))
    for i in range(0, 300, 4):
        del m[mixed(300)[i][0]]
    for i in range(40):
        m[("t", i)] = i
        c = m.copy()
        c._check()
        assert list(c.items()) == list(m.items())


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


def test_update_from_self_and_subclass_iteration_override():
    m = HashMap(mixed(20))
    m.update(m)
    m._check()
    assert list(m.items()) == mixed(20)

    class Rev(HashMap):
        def __iter__(self):
            return reversed(list(HashMap.keys(self)))

        def keys(self):
            return list(self.__iter__())

    r = Rev(mixed(5))
    t = HashMap()
    t.update(r)
    d = {}
    d.update(dict(r))
    assert list(t.items()) == list(reversed(mixed(5)))
    t._check()
