"""HashMap under hostile input: subclasses whose __new__ returns another type, the GC's
tp_clear running user code, clear() refilled from a value's __del__, keys whose __eq__
mutates the map mid-lookup or mid-iteration, impossible reservations. Each test's dict
counterpart is checked alongside where dict has one. (Shared with SnapshotMap:
test_maps_hostile.py; hostile keys checked against dict: test_dict_compat.py.)"""
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


def test_view_types_need_their_map():
    # (maps and iterators made with __new__ alone: test_maps_hostile.py)
    m = HashMap()
    for view in (type(m.keys()), type(m.values()), type(m.items())):
        with pytest.raises(TypeError):
            view.__new__(view)              # a view needs its map
        with pytest.raises(TypeError):
            view.__new__(view, None)


# ----------------------------------------------------------------- tp_clear
# (whatever a subclass's clear() does: test_maps_hostile.py)

def surviving(token):
    """Maps still alive that carry this test's marker (see test_maps_hostile.py)."""
    return [o for o in gc.get_objects()
            if isinstance(o, HashMap) and HashMap.get(o, "marker") is token]


def test_gc_clear_of_a_cycle_through_an_instance_attribute():
    token = object()
    for _ in range(20):
        m = HashMap(marker=token)
        m.me = m                            # the cycle goes through __dict__ only
        m.clear = None
    del m
    gc.collect()
    assert len(surviving(token)) == 0


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


# ----------------------------------------------------------------- re-entrant clear

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


# ----------------------------------------------------------------- hostile keys
# (HashMap's own rules, under both tunings; the rules shared with dict and SnapshotMap are
# in test_dict_compat.py)

@pytest.mark.parametrize("action", ["insert_many", "delete_all", "clear", "clear_keep"])
def test_eq_that_mutates_the_map_mid_lookup_gives_consistent_answer(tuning, action):
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

    m = HashMap()
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


def test_eq_that_clears_during_growth(tuning):
    # CPython test_resize2: __eq__ calls clear() during a resize-triggering insert
    class X:
        def __hash__(self):
            return 5

        def __eq__(self, other):
            if resizing:
                d.clear()
            return False

    d = HashMap()
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


def test_iteration_after_delete_and_insert_never_silently_differs(tuning):
    """Delete one key and insert another during iteration (same size). dict's result
    depends on whether a resize happened; HashMap either yields what dict yields or raises
    RuntimeError ("keys changed during iteration"), never a silently different result."""
    for delete, insert in ((9, 99), (0, 99), (5, 5), (0, 0)):
        out = []
        for c in (dict.fromkeys(range(10)), HashMap.fromkeys(range(10))):
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


def test_deleted_and_reinserted_key_during_iteration_does_not_end_it_early(tuning):
    # re-inserting the key just produced moves it to the end: an iterator relocating by
    # identity must not stop silently
    m = HashMap((i, i) for i in range(10))
    seen = []
    with pytest.raises(RuntimeError, match="keys changed"):
        for k in m:
            seen.append(k)
            if k == 0:
                del m[0]
                m[0] = "r"
    assert seen[0] == 0


def test_huge_reserve_raises_memoryerror_and_map_still_works(tuning):
    m = HashMap(a=1)
    for n in (2**40, 2**62):
        with pytest.raises(MemoryError):
            m.reserve(n)
        with pytest.raises(MemoryError):
            HashMap.with_capacity(n)
    with pytest.raises(ValueError):
        m.reserve(-1)
    with pytest.raises(OverflowError):
        m.reserve(2**70)
    m["b"] = 2
    assert m == {"a": 1, "b": 2}
    m._check()

