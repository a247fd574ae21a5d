"""Both maps (HashMap, SnapshotMap) under hostile construction and collection: objects
made with __new__ alone, and the GC clearing cycles whatever a subclass's clear() does.
Structure-specific hostile input: test_hashmap_hostile.py, test_snapshot_hostile.py; hostile
keys checked against dict: test_dict_compat.py."""
import copy
import gc
import pickle

import pytest

from fastmaps import HashMap, SnapshotMap

MAPS = (HashMap, SnapshotMap)


def check(m):
    if isinstance(m, SnapshotMap):
        m._check(rehash=True)
    else:
        assert m._check()


@pytest.mark.parametrize("cls", MAPS)
def test_map_made_with_new_alone_is_a_usable_empty_map(cls):
    m = cls.__new__(cls)                    # dict.__new__(dict) is a usable empty dict
    assert len(m) == 0 and list(m) == [] and m == {}
    check(m)
    m[1] = 2
    assert m == {1: 2}
    check(m)


@pytest.mark.parametrize("cls", MAPS)
def test_iterators_made_with_new_alone_are_empty(cls):
    m = cls(a=1)
    kinds = {type(it) for it in (iter(m), iter(m.keys()), iter(m.values()), iter(m.items()),
                                 reversed(m), reversed(m.items()))}
    kinds = [k for k in kinds if k.__module__ != "builtins"]
    assert kinds
    for kind in kinds:
        it = kind.__new__(kind)
        assert list(it) == [] and it.__length_hint__() == 0
        assert list(copy.copy(it)) == []
        assert it.__reduce__() == (iter, ((),))
        assert list(pickle.loads(pickle.dumps(kind.__new__(kind)))) == []


def _clear_overridden(cls):
    class ClearOverridden(cls):
        def clear(self, **kwargs):
            pass                            # does not clear: the GC must not rely on it
    return ClearOverridden


def _clear_raises(cls):
    class ClearRaises(cls):
        def clear(self, **kwargs):
            raise RuntimeError("not now")
    return ClearRaises


def _clear_shadowed(cls):
    class Plain(cls):
        pass

    def make():
        m = (cls if cls is HashMap else Plain)()  # (HashMap instances take attributes)
        m.clear = lambda **kw: None         # an instance attribute shadows the method
        return m
    return make


def surviving(token):
    """Maps still alive that carry this test's marker. (A weakref cannot tell: the GC
    clears weakrefs to everything unreachable before tp_clear, freed or not.)"""
    return [o for o in gc.get_objects()
            if isinstance(o, MAPS) and _base(o).get(o, "marker") is token]


def _base(o):
    return HashMap if isinstance(o, HashMap) else SnapshotMap


@pytest.mark.parametrize("cls", MAPS)
@pytest.mark.parametrize("how", [_clear_overridden, _clear_raises, _clear_shadowed])
def test_gc_frees_self_referencing_maps_whatever_clear_is(cls, how):
    token = object()
    make = how(cls)
    for i in range(50):
        m = make()
        m["self"] = m
        m["marker"] = token
        m.update((k, k) for k in range(200))
    del m
    gc.collect()
    assert len(surviving(token)) == 0
