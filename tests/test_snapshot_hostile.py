"""SnapshotMap / Snapshot under hostile input (issue 11): half-built versions, objects made
with __new__ alone, cycles through pages shared by several versions, writes racing the
initial contents, allocations under the writer lock, iterator pickling."""
import copy
import gc
import pickle
import sys
import weakref

import pytest

from fastmaps import Snapshot, SnapshotMap
from fastmaps._snapshot import Batch


class Box:
    """A weak-referenceable, GC-tracked container."""

    def __init__(self, *items):
        self.items = list(items)


class CKey:
    """Colliding key (every instance hashes to 7) comparing by `ident`; `hook` runs inside
    __eq__, i.e. while a write or a build is in progress."""

    hook = None

    def __init__(self, ident):
        self.ident = ident

    def __hash__(self):
        return 7

    def __eq__(self, other):
        if CKey.hook is not None:
            CKey.hook()
        return isinstance(other, CKey) and other.ident == self.ident

    def __repr__(self):
        return f"CKey({self.ident})"


@pytest.fixture(autouse=True)
def _no_hook():
    yield
    CKey.hook = None


# -- 1. half-built versions are never visible ---------------------------------------------

def test_snapshot_being_built_is_not_visible_to_its_keys():
    s = Snapshot.__new__(Snapshot)
    seen = []
    iters = []

    def hook():
        seen.append((len(s), list(s), hash(s)))
        it = iter(s)
        iters.append(it)
        for _ in it:                 # advance it, so that it would cache a page pointer
            break

    CKey.hook = hook
    s.__init__([(CKey(i), i) for i in range(40)])
    CKey.hook = None
    assert seen and all(n == 0 and ks == [] for n, ks, _ in seen)
    for it in iters:                 # (used to read the page freed by a realloc)
        assert list(it) == []
    assert list(s) == [CKey(i) for i in range(40)] and len(s) == 40
    assert hash(s) == hash(Snapshot([(CKey(i), i) for i in range(40)]))
    s._check(rehash=True)
    with pytest.raises(TypeError, match="immutable"):
        s.__init__({})


def test_failed_snapshot_build_leaves_it_empty():
    class Boom(CKey):
        __hash__ = CKey.__hash__

        def __eq__(self, other):
            raise ValueError("boom")

    s = Snapshot.__new__(Snapshot)
    with pytest.raises(ValueError):
        s.__init__([(CKey(1), 1), (Boom(2), 2)])
    assert len(s) == 0 and list(s) == [] and s == Snapshot()
    s._check()


def test_private_version_of_update_is_not_reachable():
    m = SnapshotMap({CKey(0): 0})
    pub = m.snapshot()
    new_keys = {CKey(i) for i in range(1, 12)}
    new_ids = {id(k) for k in new_keys}
    leaked = []
    calls = []

    def hook():
        calls.append(1)
        if len(calls) % 5:
            return
        for o in gc.get_objects():
            # a Snapshot holding any key of this update (by identity: no __eq__ here)
            if type(o) is Snapshot and o is not pub and any(id(k) in new_ids for k in o):
                leaked.append(len(o))
                it = iter(o)
                next(it, None)
                leaked.append(it)

    CKey.hook = hook
    m.update([(k, k.ident) for k in sorted(new_keys, key=lambda k: k.ident)])
    CKey.hook = None
    assert not [x for x in leaked if isinstance(x, int)], leaked
    assert len(m) == 12 and m.version == 1 and len(calls) > 20
    m._check(rehash=True)


def test_preallocated_snapshot_found_during_a_write_stays_empty():
    m = SnapshotMap({CKey(i): i for i in range(5)})
    keep = m.snapshot()                      # the published version is shared
    found = []

    def hook():
        if found:
            return
        for o in gc.get_objects():
            if type(o) is Snapshot and len(o) == 0 and o is not keep:
                it = iter(o)
                found.append((o, it))

    CKey.hook = hook
    m[CKey(99)] = 99
    CKey.hook = None
    # whatever empty Snapshot was seen then: its iterator stays empty, as its length was
    for o, it in found:
        assert list(it) == []
    assert len(m) == 6 and keep == {CKey(i): i for i in range(5)}


# -- 2. objects made with __new__ alone ------------------------------------------------------

def test_batch_made_with_new_alone():
    b = Batch.__new__(Batch)
    with pytest.raises(TypeError, match="batch"):
        b.__enter__()
    with pytest.raises(TypeError, match="batch"):
        with b:
            pass
    with pytest.raises(RuntimeError):
        b["x"] = 1
    with pytest.raises(RuntimeError):
        len(b)
    with pytest.raises(RuntimeError):
        b.__exit__(None, None, None)
    assert "new" in repr(b)
    del b
    gc.collect()


def test_objects_made_with_new_alone_are_consistent():
    # (SnapshotMap and its iterators made with __new__ alone: test_maps_hostile.py)
    s = Snapshot.__new__(Snapshot)
    assert len(s) == 0 and list(s) == [] and s == {} and s == Snapshot()
    assert hash(s) == hash(Snapshot())
    s._check()
    assert SnapshotMap.__new__(SnapshotMap).version == 0
    it = type(iter(Snapshot())).__new__(type(iter(Snapshot())))
    assert list(it) == [] and it.__length_hint__() == 0
    assert list(pickle.loads(pickle.dumps(it))) == []
    assert list(copy.copy(it)) == []


def test_batch_entered_twice():
    m = SnapshotMap(a=1)
    b = m.batch()
    with b:
        with pytest.raises(RuntimeError):
            b.__enter__()
        b["b"] = 2
    assert m == {"a": 1, "b": 2}


# -- 4. cycles through pages shared by several versions ----------------------------------------

def _collected(ref):
    for _ in range(3):
        gc.collect()
    return ref() is None


def test_cycle_through_page_shared_by_copy_is_collected():
    m = SnapshotMap()
    box = Box()
    m["a"] = box
    c = m.copy()                     # m's and c's versions share the page holding box
    box.items += [m, c]
    r = weakref.ref(box)
    rm, rc = weakref.ref(m), weakref.ref(c)
    del m, c, box
    assert _collected(r) and rm() is None and rc() is None


def test_cycle_through_page_shared_by_replace_is_collected():
    box = Box()
    s = Snapshot({"a": box, "b": 2})
    m = SnapshotMap()
    m.replace(s)                     # m adopts s's pages
    box.items += [s, m]
    r = weakref.ref(box)
    del s, m, box
    assert _collected(r)


def test_cycle_through_pages_shared_by_old_versions_is_collected():
    m = SnapshotMap({i: i for i in range(100)})
    box = Box()
    m["box"] = box
    snaps = []
    for i in range(5):                # versions sharing most pages (box's included)
        snaps.append(m.snapshot())
        m[i] = -i
    box.items += snaps + [m]
    r = weakref.ref(box)
    del m, box, snaps
    assert _collected(r)


def test_cycle_through_shared_inner_nodes_is_collected():
    from fastmaps import _snapshot
    m = SnapshotMap({i: i for i in range(3000)})   # a log tree with inner nodes
    boxes = [Box() for _ in range(10)]
    for j, b in enumerate(boxes):
        m[("box", j)] = b
    c = m.copy()
    s = c.snapshot()
    c[0] = "changed"                 # c's new root; its children are shared with m and s
    for b in boxes:
        b.items += [m, c, s]
    refs = [weakref.ref(b) for b in boxes]
    del m, c, s, b, boxes
    for _ in range(3):
        gc.collect()
    assert all(r() is None for r in refs)
    assert _snapshot is not None


def test_reachable_sharer_keeps_shared_records_intact():
    m = SnapshotMap()
    box = Box("payload")
    m["a"] = box
    c = m.copy()
    box.items.append(c)              # c -> page -> box -> c, but m (alive) shares the page
    s = m.snapshot()
    box.items.append(s)
    del c, s, box
    for _ in range(3):
        gc.collect()
    box = m["a"]
    assert box.items[0] == "payload"
    c, s = box.items[1], box.items[2]
    assert c["a"] is box and s["a"] is box and len(c) == 1 and len(s) == 1
    c._check()
    s._check()


def test_collection_never_clears_reachable_records_random():
    import random
    rnd = random.Random(11)
    m = SnapshotMap()
    keep = []
    expect = {}
    for step in range(1500):
        op = rnd.randrange(6)
        k = rnd.randrange(200)
        if op < 3:
            box = Box(step)
            if rnd.random() < 0.3 and keep:
                box.items.append(rnd.choice(keep))   # references back into versions
            m[k] = box
            expect[k] = box
        elif op == 3 and k in expect:
            del m[k]
            del expect[k]
        elif op == 4:
            s = m.snapshot() if rnd.random() < 0.5 else m.copy()
            keep.append(s)
            if len(keep) > 20:
                keep.pop(rnd.randrange(len(keep)))
        elif op == 5 and rnd.random() < 0.1 and keep:
            src = rnd.choice(keep)           # adopt another version's pages
            m.replace(src)
            expect = dict(src.items() if isinstance(src, Snapshot) else src.snapshot().items())
        elif op == 5 and rnd.random() < 0.1:
            with m.batch() as b:             # a batch's own snapshot shares its pages
                box = Box(step)
                b[k] = box
                expect[k] = box
                keep.append(b.snapshot())
                b[k + 1000] = Box(step)
                expect[k + 1000] = b[k + 1000]
        elif rnd.random() < 0.2:
            gc.collect(rnd.randrange(2))
        if step % 300 == 0:
            gc.collect()
            for kk, box in expect.items():
                assert m[kk] is box and box.items[0] is not None
            for s in keep:
                for v in s.values():
                    assert isinstance(v.items, list) and len(v.items) >= 1
    gc.collect()
    m._check()
    for s in keep:
        s._check()
        for v in s.values():
            assert len(v.items) >= 1


def test_gc_counts_shared_records_once():
    # every record is reported to the collector once, whatever the sharing: an object
    # held only by one page has as many referrers reported as references
    m = SnapshotMap({i: i for i in range(2000)})
    val = Box()
    m["v"] = val
    holders = [m.snapshot(), m.copy()]
    m[0] = "x"
    holders.append(m.copy().snapshot())
    gc.collect()
    referrers = [o for o in gc.get_referrers(val) if o is not holders]
    assert len(referrers) == 1, referrers     # one reporter for the one page holding val
    assert sys.getrefcount(val) == 2 + 1      # the page + `val` + getrefcount's argument


# -- 5. SnapshotMap.__init__ does not lose concurrent writes ------------------------------------

def test_init_keeps_a_write_made_while_it_builds():
    m = SnapshotMap.__new__(SnapshotMap)
    done = []

    def hook():
        if not done:
            done.append(1)
            m["meanwhile"] = 1

    CKey.hook = hook
    m.__init__([(CKey(1), 1), (CKey(2), 2)])
    CKey.hook = None
    assert m == {"meanwhile": 1, CKey(1): 1, CKey(2): 2}
    assert m.version == 2
    assert list(m)[0] == "meanwhile"
    m._check()


def test_init_of_fresh_map_is_version_0():
    m = SnapshotMap({"a": 1})
    assert m.version == 0
    m.__init__({"b": 2})             # as dict.__init__: an update
    assert m == {"a": 1, "b": 2} and m.version == 1


# -- 6. nothing allocates or runs user code under the writer lock ---------------------------

class _Finalizer:
    """Writes to a map from a finalizer run by a collection."""

    def __init__(self, m, key, errors):
        self.m, self.key, self.errors = m, key, errors
        self.cycle = self

    def __del__(self):
        try:
            self.m[self.key] = "written by finalizer"
        except Exception as e:      # pragma: no cover - the bug being tested
            self.errors.append(e)


def _collection_at_next_allocation(m, op, armed_by_op=False):
    """Run op() with a collectable finalizer pending and the collector set to run at the
    next GC allocation (from op's start, or from when op calls the `arm` it is given:
    on 3.10 calling a Python function allocates a frame, so a test of what happens after
    some user code must arm the collector at the end of that code)."""
    errors = []
    enabled = gc.isenabled()
    old = gc.get_threshold()
    gc.collect()
    gc.disable()

    def arm():
        gc.set_threshold(1)
        gc.enable()

    try:
        _Finalizer(m, "fin", errors)           # garbage, collectable only by the GC
        if armed_by_op:
            result = op(arm)
        else:
            arm()
            result = op()
    finally:
        gc.set_threshold(*old)
        if enabled:
            gc.enable()
        else:
            gc.disable()
    gc.collect()
    return result, errors


def test_popitem_allocates_outside_the_writer_lock():
    m = SnapshotMap({"a": 1, "b": 2})
    result, errors = _collection_at_next_allocation(m, m.popitem)
    assert result == ("b", 2)
    assert not errors, errors
    assert m == {"a": 1, "fin": "written by finalizer"}
    m._check()


def test_write_whose_eq_shares_the_version_allocates_outside_the_lock():
    # the published version looks unshared before the lock (no Snapshot preallocated);
    # the key's __eq__ then takes a snapshot, so the write needs a new Snapshot under the
    # lock: that allocation must not start a collection (whose finalizer writes here)
    m = SnapshotMap({CKey(1): 1})
    held = []
    k2 = CKey(2)

    def op(arm):
        drain = [Snapshot.__new__(Snapshot) for _ in range(100)]   # empty the freelist
        def hook():
            if not held:
                held.append(m.snapshot())
                arm()                    # collect at the next allocation (ours, under the lock)
        CKey.hook = hook
        m[k2] = 2                        # __eq__ makes the published version shared
        del drain

    _, errors = _collection_at_next_allocation(m, op, armed_by_op=True)
    CKey.hook = None
    assert not errors, errors
    assert held[0] == {CKey(1): 1}
    assert m == {CKey(1): 1, CKey(2): 2, "fin": "written by finalizer"}
    m._check()
    held[0]._check()


# -- 7. (iterators, the Snapshot's too, pickle and copy like dict's: test_dict_compat.py) ------

def test_batch_entered_by_two_threads_at_once():
    import threading
    import time
    m = SnapshotMap(a=1)
    outer = m.batch()
    outer.__enter__()                    # holds the writer lock: b's first entry waits
    b = m.batch()
    entered = threading.Event()

    def first():
        b.__enter__()
        entered.set()
        b["first"] = 1
        b.__exit__(None, None, None)

    t1 = threading.Thread(target=first)
    t1.start()
    time.sleep(0.2)                      # t1 is now waiting inside b.__enter__
    second = []

    def again():
        try:
            b.__enter__()
            second.append("entered")
            b.__exit__(None, None, None)
        except RuntimeError as e:
            second.append(e)

    t2 = threading.Thread(target=again)
    t2.start()
    t2.join(2.0)
    assert not t2.is_alive(), "a second entry of a batch being entered must not wait"
    assert len(second) == 1 and isinstance(second[0], RuntimeError)
    outer.__exit__(None, None, None)
    t1.join(5.0)
    assert entered.is_set() and m == {"a": 1, "first": 1}
    m._check()


def test_batch_reversed_and_pop_of_an_empty_batch_behave_like_dict():
    # reversed(batch) fell back to the sequence protocol (KeyError: 0); pop on an empty
    # batch hashed the key, where dict.pop answers an empty dict without hashing
    class NoHash:
        def __hash__(self):
            raise AssertionError("hashed")

    m = SnapshotMap(a=1, b=2)
    d = {"a": 1, "b": 2}
    with m.batch() as b:
        b["c"] = 3
        d["c"] = 3
        assert list(reversed(b)) == list(reversed(d)) == ["c", "b", "a"]
        b.clear()
        d.clear()
        assert b.pop(NoHash(), "dflt") == d.pop(NoHash(), "dflt") == "dflt"
        assert b.pop([], None) is d.pop([], None) is None
        with pytest.raises(KeyError):
            d.pop(NoHash())
        with pytest.raises(KeyError):
            b.pop(NoHash())
        assert list(reversed(b)) == []
    assert m == {}
    m._check()
