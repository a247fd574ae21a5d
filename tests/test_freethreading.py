"""Structures shared between threads: what a free-threaded build (3.13t, GIL off) must
give, checked on every build. Sized to run in a few seconds; exact post-conditions.

On GIL builds these still interleave (a short switch interval), so they check that the
critical sections and reentrancy rules hold together; on a free-threaded build the
threads really run at once. SnapshotMap's reader/writer stress tests are in
test_snapshot_threads.py, the pool's counting stress tests in test_pool_threads.py.
"""
import gc
import os
import subprocess
import sys
import sysconfig
import threading
import weakref

import pytest

from fastmaps import HashMap, ObjectPool, SnapshotMap

from ._threads import run_threads as _run_threads

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


pytestmark = pytest.mark.usefixtures("fast_switching")


def run_threads(targets, timeout=60):
    """Start all targets together (a barrier), join them, re-raise the first error."""
    _run_threads(targets, timeout, start_together=True)


@pytest.mark.skipif(not FREE_THREADED, reason="needs a free-threaded (3.13t) build")
def test_import_leaves_the_gil_disabled():
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    code = ("import sys, fastmaps, fastmaps._hashmap, fastmaps._snapshot, fastmaps._pool;"
            "print(sys._is_gil_enabled())")
    out = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", code],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out


# ------------------------------------------------------------------------- HashMap

def test_hashmap_one_writer_many_readers():
    # the crash: a writer inserting and deleting in rounds (so migrations grow
    # and shrink the index), readers calling get/[]/in on the same map
    m = HashMap()
    n = 5000
    done = threading.Event()
    seen_bad = []

    def writer():
        try:
            for r in range(6):
                for i in range(n):
                    m[i] = (r, i)
                for i in range(0, n, 2):
                    del m[i]
        finally:
            done.set()

    def reader():
        while not done.is_set():
            for i in range(0, n, 7):
                v = m.get(i)
                if v is not None and v[1] != i:
                    seen_bad.append((i, v))
                try:
                    v = m[i + 1]
                    if v[1] != i + 1:
                        seen_bad.append((i + 1, v))
                except KeyError:
                    pass
                (i + 3) in m

    run_threads([writer, reader, reader, reader])
    assert not seen_bad
    m._check()
    assert dict(m) == {i: (5, i) for i in range(1, n, 2)}


def test_hashmap_writers_on_disjoint_keys_lose_no_writes():
    m = HashMap()
    per = 3000

    def worker(t):
        def run():
            base = t * 1_000_000
            for r in range(3):
                for i in range(base, base + per):
                    m[i] = i
                for i in range(base, base + per, 2):
                    del m[i]
                for i in range(base, base + per, 2):
                    m[i] = -i
                m.pop(base + 1)
                m.setdefault(base + 1, r)
        return run

    run_threads([worker(t) for t in range(4)])
    m._check()
    expected = {}
    for t in range(4):
        base = t * 1_000_000
        for i in range(base, base + per):
            expected[i] = -i if (i - base) % 2 == 0 else i
        expected[base + 1] = 2
    assert len(m) == len(expected)
    assert dict(m) == expected


def test_hashmap_mixed_readers_writers_with_colliding_user_keys():
    # user __hash__/__eq__ run inside the map's critical section and may let other
    # threads in: every lookup must revalidate (as for re-entrant mutation under the GIL)
    class K:
        __slots__ = ("v",)

        def __init__(self, v):
            self.v = v

        def __hash__(self):
            return self.v % 13

        def __eq__(self, other):
            return isinstance(other, K) and other.v == self.v

    m = HashMap()
    keys = [K(i) for i in range(400)]

    def writer(lo, hi):
        def run():
            for r in range(4):
                for k in keys[lo:hi]:
                    m[k] = r
                for k in keys[lo:hi:3]:
                    del m[k]
                for k in keys[lo:hi:3]:
                    m[k] = r
        return run

    def reader():
        for _ in range(4):
            for k in keys:
                m.get(k)
                k in m
            try:
                list(m.items())
            except RuntimeError as e:      # the writers change the size: as dict's would
                assert "changed" in str(e), e

    run_threads([writer(0, 200), writer(200, 400), reader, reader])
    m._check()
    assert len(m) == 400
    assert all(m[k] == 3 for k in keys)


def test_hashmap_iteration_during_writes_raises_like_dict_or_continues():
    m = HashMap((i, i) for i in range(2000))
    done = threading.Event()
    outcomes = {"completed": 0, "raised": 0}

    def writer():
        try:
            for r in range(20):
                for i in range(2000, 2600):
                    m[i] = i
                for i in range(2000, 2600):
                    del m[i]
                for i in range(0, 2000, 5):
                    m[i] = r                         # value updates: no size change
        finally:
            done.set()

    def iterator(kind):
        def run():
            passes = 0
            while not done.is_set() or passes < 3:
                passes += 1
                try:
                    for x in getattr(m, kind)():
                        if kind == "items":
                            assert len(x) == 2
                    outcomes["completed"] += 1
                except RuntimeError as e:
                    assert "changed" in str(e), e
                    outcomes["raised"] += 1
        return run

    def other_readers():
        while not done.is_set():
            repr(m)                      # tolerant internal iteration: never raises
            m == {}
            m.copy()._check()            # copy is one critical section: consistent
            try:
                # dict(m) reads keys() then m[k] for each (the mapping protocol): it may
                # raise, as it would for a dict subclass or any mapping written meanwhile
                m == dict(m)
            except RuntimeError as e:
                assert "changed" in str(e), e
            except KeyError as e:
                assert 2000 <= e.args[0] < 2600, e    # only the keys being deleted

    run_threads([writer, iterator("keys"), iterator("items"), iterator("values"),
                 other_readers])
    m._check()
    assert dict(m) == {i: (19 if i % 5 == 0 else i) for i in range(2000)}
    assert outcomes["completed"] + outcomes["raised"] >= 9


def test_hashmap_shared_iterator_hands_each_key_out_once():
    m = HashMap((i, i) for i in range(20000))
    it = iter(m)
    got = [[], []]

    def consumer(j):
        def run():
            for k in it:
                got[j].append(k)
        return run

    run_threads([consumer(0), consumer(1)])
    assert sorted(got[0] + got[1]) == list(range(20000))


def test_hashmap_clear_and_update_between_threads():
    m = HashMap()
    src = {i: i for i in range(3000)}

    def updater():
        for _ in range(10):
            m.update(src)

    def clearer():
        for _ in range(10):
            m.clear()
            m.popitem() if len(m) else None

    run_threads([updater, clearer, updater])
    m._check()
    m.update(src)
    assert dict(m) == src


# ------------------------------------------------------------------------- SnapshotMap

def test_snapshotmap_batches_are_all_or_nothing_for_readers():
    m = SnapshotMap({k: 0 for k in range(64)})
    done = threading.Event()
    bad = []

    def writer():
        try:
            for gen in range(1, 300):
                with m.batch() as b:
                    for k in range(64):
                        b[k] = gen
        finally:
            done.set()

    def reader():
        while not done.is_set():
            s = m.snapshot()
            vals = set(s.values())
            if len(vals) != 1:
                bad.append(sorted(vals))
            vals = set(dict(m.items()).values())   # one iteration: one version
            if len(vals) != 1:
                bad.append(sorted(vals))

    run_threads([writer, reader, reader])
    assert not bad
    assert set(m.values()) == {299}
    m._check()


# ------------------------------------------------------------------------- ObjectPool

class Item:
    __slots__ = ("owner", "__weakref__")

    def __init__(self):
        self.owner = None


@pytest.mark.parametrize("kwargs", [{}, {"local_cache": 0}, {"max_size": 3},
                                    {"max_idle": 2, "local_cache": 1}])
def test_pool_never_hands_one_object_to_two_threads(kwargs):
    pool = ObjectPool(Item, gc_release=False, **kwargs)
    clashes = []

    def worker(t):
        def run():
            for i in range(2000):
                with pool.borrow(timeout=30) as obj:
                    if obj.owner is not None:
                        clashes.append((t, obj.owner))
                    obj.owner = t
                    if i % 7 == 0:
                        obj2 = pool.get(timeout=30) if "max_size" not in kwargs else None
                        if obj2 is not None:
                            if obj2.owner is not None:
                                clashes.append((t, obj2.owner))
                            pool.put(obj2)
                    obj.owner = None
        return run

    run_threads([worker(t) for t in range(4)])
    assert not clashes
    pool._check()
    assert pool.stats()["in_use"] == 0


def test_pool_gc_callback_survives_pools_created_during_collection():
    # pools created (and dropped) by one thread while another runs gc.collect(): the GC
    # callback walked a WeakSet that the other thread changed ("Set changed size during
    # iteration", reported as unraisable, and that collection's rotation was skipped)
    unraisable = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda u: unraisable.append(u)
    keep = [ObjectPool(Item) for _ in range(300)]    # a long walk for the callback
    stop = threading.Event()

    def creator():
        n = 0
        while not stop.is_set() and n < 200000:
            p = ObjectPool(Item)
            p.put(p.get())
            n += 1

    def collector():
        try:
            for _ in range(40):
                gc.collect()
        finally:
            stop.set()

    try:
        run_threads([creator, collector])
    finally:
        sys.unraisablehook = old_hook
    assert not unraisable, [str(u.exc_value) for u in unraisable[:3]]
    del keep


def test_pool_gc_registry_drops_dead_and_closed_pools():
    from fastmaps import _pool
    before = len(_pool._registry)
    pools = [ObjectPool(Item) for _ in range(10)]
    assert len(_pool._registry) == before + 10
    pools[0].close()
    assert len(_pool._registry) == before + 9
    ref = weakref.ref(pools[1])
    del pools[1]
    gc.collect()
    assert ref() is None
    assert len(_pool._registry) == before + 8
    del pools
    gc.collect()
    assert len(_pool._registry) == before
