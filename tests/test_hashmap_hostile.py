"""Regression tests for issue 11's HashMap findings: objects made with __new__ and unchecked
casts, the GC's tp_clear running user code, and a subclass's __len__/copy/update trusted
where dict never calls them. Each test's dict counterpart is checked alongside."""
import copy
import gc
import subprocess
import sys
import textwrap

import pytest

from fastmaps import HashMap

from ._tuning import tuned


def run_isolated(code):
    """Run code in a fresh interpreter (a crash must fail the test, not the test run)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=120)


# ----------------------------------------------------------------- __new__ / casts

@pytest.mark.parametrize("made", ["[]", "{}", "object()", "None"])
def test_with_capacity_on_a_subclass_whose_new_returns_another_type(made):
    # used to cast the result to HashMap unchecked and write into it (a segfault)
    r = run_isolated(f"""
        from fastmaps import HashMap
        class H(HashMap):
            def __new__(cls, *args, **kwargs):
                return {made}
        try:
            H.with_capacity(10)
        except TypeError as e:
            print("TypeError:", e)
    """)
    assert r.returncode == 0, r.stderr
    assert "TypeError: H() returned" in r.stdout


def test_with_capacity_on_a_subclass_whose_new_returns_a_hashmap():
    class H(HashMap):
        def __new__(cls, *args, **kwargs):
            return HashMap()

    m = H.with_capacity(100)
    assert type(m) is HashMap and m.capacity >= 100


def test_objects_made_with_new_only_are_safe():
    m = HashMap.__new__(HashMap)            # dict.__new__(dict) is a usable empty dict
    assert len(m) == 0 and list(m) == [] and m._check()
    m[1] = 2
    assert m == {1: 2}
    it_type = type(iter(HashMap()))
    for kind in (type(iter(HashMap())), type(iter(HashMap().items())),
                 type(reversed(HashMap()))):
        it = kind.__new__(kind)
        assert list(it) == [] and it.__length_hint__() == 0
        assert copy.copy(it) is not None
    assert it_type.__new__(it_type).__reduce__() == (iter, ((),))
    for view in (type(m.keys()), type(m.values()), type(m.items())):
        with pytest.raises(TypeError):
            view.__new__(view)              # a view needs its map
        with pytest.raises(TypeError):
            view.__new__(view, None)


# ----------------------------------------------------------------- tp_clear

class ClearOverridden(HashMap):
    def clear(self, **kwargs):
        pass                                # does not clear: the GC must not rely on it


class ClearRaises(HashMap):
    def clear(self, **kwargs):
        raise RuntimeError("not now")


def surviving(token):
    """Maps still alive that carry this test's marker. (A weakref cannot tell: the GC
    clears weakrefs to everything unreachable before tp_clear, freed or not.)"""
    return [o for o in gc.get_objects()
            if isinstance(o, HashMap) and HashMap.get(o, "marker") is token]


@pytest.mark.parametrize("how", ["subclass", "raising", "instance_attribute"])
def test_gc_frees_self_referencing_maps_whatever_clear_is(how):
    token = object()
    for i in range(50):
        if how == "subclass":
            m = ClearOverridden()
        elif how == "raising":
            m = ClearRaises()
        else:
            m = HashMap()
            m.clear = lambda **kw: None     # an instance attribute shadows the method
        m["self"] = m
        m["marker"] = token
        m.update((k, k) for k in range(200))
    del m
    gc.collect()
    assert len(surviving(token)) == 0


def test_gc_clear_of_a_cycle_through_an_instance_attribute():
    token = object()
    for _ in range(20):
        m = HashMap(marker=token)
        m.me = m                            # the cycle goes through __dict__ only
        m.clear = None
    del m
    gc.collect()
    assert len(surviving(token)) == 0


# ----------------------------------------------------------------- true sizes

class LyingLenDict(dict):
    def __init__(self, *args, length, **kwargs):
        super().__init__(*args, **kwargs)
        self.length = length

    def __len__(self):
        if isinstance(self.length, BaseException):
            raise self.length
        return self.length


class LyingLenMap(HashMap):
    def __init__(self, *args, length, **kwargs):
        super().__init__(*args, **kwargs)
        self.length = length

    def __len__(self):
        if isinstance(self.length, BaseException):
            raise self.length
        return self.length


@pytest.mark.parametrize("cls", [LyingLenDict, LyingLenMap])
@pytest.mark.parametrize("length", [2 ** 40, 10 ** 6, ValueError("no len")])
def test_construction_and_update_presize_from_the_true_size(cls, length):
    src = cls({"a": 1}, length=length)
    assert dict(src) == {"a": 1}            # dict never calls __len__ here
    m = HashMap(src)
    assert m == {"a": 1} and m.capacity < 100
    m = HashMap()
    m.update(src)
    assert m == {"a": 1} and m.capacity < 100
    m._check()


@pytest.mark.parametrize("cls", [LyingLenDict, LyingLenMap])
def test_equality_reads_the_true_size(cls):
    other = cls({1: 1}, length=5)
    assert {1: 1} == other                  # dict reads the true sizes (ma_used)
    assert HashMap({1: 1}) == other
    assert not (HashMap({1: 1}) != other)
    assert HashMap({1: 1, 2: 2}) != other
    other = cls({1: 1}, length=ValueError("no len"))
    assert HashMap({1: 1}) == other


class NoisyDict(dict):
    calls = []

    def copy(self):
        self.calls.append("copy")
        return {}

    def update(self, *args, **kwargs):
        self.calls.append("update")

    def keys(self):
        self.calls.append("keys")
        return super().keys()


class NoisyMap(HashMap):
    calls = []

    def copy(self):
        self.calls.append("copy")
        return HashMap()

    def update(self, *args, **kwargs):
        self.calls.append("update")

    def keys(self):
        self.calls.append("keys")
        return super().keys()


@pytest.mark.parametrize("cls, base", [(NoisyDict, dict), (NoisyMap, HashMap)])
def test_operators_do_not_call_a_subclasss_copy_or_update(cls, base):
    cls.calls.clear()
    a = cls({"a": 1})
    r = a | {"b": 2}
    assert type(r) is base and r == {"a": 1, "b": 2}
    a |= {"c": 3}
    assert a == {"a": 1, "c": 3}
    assert HashMap(a) == {"a": 1, "c": 3}   # keys() not called: __iter__ is inherited
    h = HashMap()
    h.update(a)
    assert h == {"a": 1, "c": 3}
    assert {"z": 0} | a == {"z": 0, "a": 1, "c": 3}
    assert cls.calls == []


def test_copy_copy_ignores_an_instance_attribute_named_copy():
    m = HashMap(a=1)
    m.copy = lambda: "not a copy"
    c = copy.copy(m)
    assert type(c) is HashMap and c == {"a": 1} and c.copy() == "not a copy"


# ----------------------------------------------------------------- flags

@pytest.mark.parametrize("flag", ["x", 1, 0, [], None, 1.0])
def test_clear_keep_capacity_must_be_a_bool(flag):
    m = HashMap(a=1)
    with pytest.raises(TypeError, match="keep_capacity must be a bool"):
        m.clear(keep_capacity=flag)
    assert m == {"a": 1}
    m.clear(keep_capacity=True)
    assert len(m) == 0 and m.capacity > 0
    m[1] = 1
    m.clear(keep_capacity=False)
    assert len(m) == 0


# ----------------------------------------------------------------- lookups that end

class Endless(Exception):
    pass


@pytest.mark.parametrize("cls", [dict, HashMap])
def test_eq_that_writes_and_pops_does_not_keep_a_lookup_going(cls, tuning):
    # every comparison inserts and pops: dict's lookup goes on past such changes; HashMap
    # restarted after every popitem, so the lookup never ended
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
    m[K()] = 1
    probe = K()
    assert (probe in m) is False
    assert m.get(probe, "absent") == "absent"
    m[probe] = 2
    assert m[probe] == 2
    if cls is HashMap:
        m._check()


def test_clear_survives_a_refill_by_layout_copy_from_other_segments():
    # A value's __del__, run by clear()'s DECREFs, refills the emptied map from a HashMap
    # whose segments have another size (the layout copy takes the source's geometry); the
    # rest of the clear loop must go on with the old map's geometry (it used to index the
    # old segments with the new shift: a segfault).
    with tuned("default", hashmap=dict(seg_shift=2)):
        src = HashMap({i: i for i in range(50)})
    for keep in (False, True):
        m = HashMap()
        fired = []

        class D:
            def __del__(self):
                if not fired:
                    fired.append(1)
                    m.update(src)

        m[0] = D()
        for i in range(1, 5000):
            m[i] = i
        m.clear(keep_capacity=keep)
        assert fired
        assert m == src
        m._check()
        for i in range(100, 6000):
            m[i] = i
        m._check()
        assert len(m) == 50 + 5900
