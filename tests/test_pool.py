"""ObjectPool semantics: single-threaded behaviour, callbacks and their errors, bounds,
blocking, close(), the GC victim tier, statistics and argument checking."""
import gc
import pickle
import threading
import time
import types
import weakref

import pytest

from fastmaps import ObjectPool, PoolClosedError
from fastmaps._pool import Lease
from fastmaps import _pool


class Obj:
    """A small weak-referenceable object (bytearray cannot be weakly referenced)."""

    counter = 0

    def __init__(self):
        Obj.counter += 1
        self.n = Obj.counter
        self.dirty = False

    def __repr__(self):
        return f"Obj({self.n})"


def stats_add_up(pool):
    s = pool.stats()
    assert s["created"] == s["idle"] + s["in_use"] + s["discarded"], s
    assert s["hits"] + s["misses"] <= s["gets"], s
    assert pool._check() is True
    return s


@pytest.fixture
def no_auto_gc():
    """Only explicit gc.collect() calls rotate the victim tier during the test."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# --------------------------------------------------------------------------- basics
def test_get_creates_then_reuses():
    calls = []

    def factory():
        calls.append(1)
        return Obj()

    pool = ObjectPool(factory)
    a = pool.get()
    assert len(calls) == 1 and len(pool) == 0
    pool.put(a)
    assert len(pool) == 1
    assert pool.get() is a
    assert len(calls) == 1
    s = pool.stats()
    assert (s["gets"], s["hits"], s["misses"], s["created"], s["puts"]) == (2, 1, 1, 1, 1)
    assert s["in_use"] == 1 and s["high_water"] == 1
    pool.put(a)
    stats_add_up(pool)


def test_lifo_order_and_len():
    pool = ObjectPool(Obj)  # local_cache=4
    objs = [pool.get() for _ in range(10)]
    assert len({id(o) for o in objs}) == 10
    for o in objs:
        pool.put(o)
    assert len(pool) == 10
    # the first 4 returned fill this thread's cache slot, the rest go to the shared
    # stack; get() drains the slot first; each tier is LIFO
    again = [pool.get() for _ in range(10)]
    assert again == objs[3::-1] + objs[:3:-1]
    for o in again:
        pool.put(o)
    stats_add_up(pool)
    strict = ObjectPool(Obj, local_cache=0)
    objs = [strict.get() for _ in range(10)]
    for o in objs:
        strict.put(o)
    again = [strict.get() for _ in range(10)]
    assert again == objs[::-1]
    assert strict.stats()["high_water"] == 10
    for o in again:
        strict.put(o)
    stats_add_up(strict)


@pytest.mark.parametrize("local_cache", [0, 1, 4])
def test_double_put_is_rejected(local_cache):
    pool = ObjectPool(Obj, local_cache=local_cache)
    a, b = pool.get(), pool.get()
    pool.put(a)
    with pytest.raises(ValueError, match="already idle"):
        pool.put(a)
    # rejected put changed nothing
    assert len(pool) == 1 and pool.stats()["in_use"] == 1
    pool.put(b)
    with pytest.raises(ValueError, match="already idle"):
        pool.put(b)
    stats_add_up(pool)
    # after the victim rotation the object is still idle: still rejected
    pool._check()


def test_double_put_detected_in_victim_tier(no_auto_gc):
    pool = ObjectPool(Obj)
    a, b = pool.get(), pool.get()
    pool.put(a)
    gc.collect()  # a moves to the victim tier
    with pytest.raises(ValueError, match="already idle"):
        pool.put(a)
    pool.put(b)
    stats_add_up(pool)


def test_put_when_nothing_checked_out_is_rejected():
    pool = ObjectPool(Obj)
    with pytest.raises(ValueError, match="did not hand out"):
        pool.put(Obj())
    assert len(pool) == 0
    stats_add_up(pool)


def test_discard():
    pool = ObjectPool(Obj)
    a = pool.get()
    pool.discard(a)
    s = stats_add_up(pool)
    assert s["in_use"] == 0 and s["discarded"] == 1 and len(pool) == 0
    with pytest.raises(ValueError, match="did not hand out"):
        pool.discard(a)
    b = pool.get()
    c = pool.get()
    pool.put(b)
    with pytest.raises(ValueError, match="idle"):
        pool.discard(b)
    pool.put(c)
    stats_add_up(pool)


def test_none_and_singletons_cannot_be_idle_twice():
    # A factory returning the same object twice is a misuse; the pool still never holds
    # it twice, so it can never hand it out twice from its idle tiers.
    shared = Obj()
    pool = ObjectPool(lambda: shared)
    a, b = pool.get(), pool.get()
    pool.put(a)
    with pytest.raises(ValueError):
        pool.put(b)
    assert len(pool) == 1


# --------------------------------------------------------------------------- borrow
def test_borrow_returns_object():
    pool = ObjectPool(Obj)
    with pool.borrow() as o:
        assert isinstance(o, Obj)
        assert pool.stats()["in_use"] == 1
    assert len(pool) == 1 and pool.stats()["in_use"] == 0
    with pool.borrow() as o2:
        assert o2 is o
    stats_add_up(pool)


def test_borrow_returns_object_on_error_by_default():
    pool = ObjectPool(Obj)
    with pytest.raises(KeyError):
        with pool.borrow() as o:
            raise KeyError("boom")
    assert len(pool) == 1 and pool.get() is o


def test_borrow_discard_on_error():
    pool = ObjectPool(Obj)
    with pytest.raises(KeyError):
        with pool.borrow(discard_on_error=True):
            raise KeyError("boom")
    s = stats_add_up(pool)
    assert len(pool) == 0 and s["discarded"] == 1
    with pool.borrow(discard_on_error=True):
        pass
    assert len(pool) == 1


def test_lease_discard_and_misuse():
    pool = ObjectPool(Obj)
    lease = pool.borrow()
    assert isinstance(lease, Lease) and lease.obj is None and lease.pool is pool
    with pytest.raises(RuntimeError):
        lease.discard()
    with lease as o:
        assert lease.obj is o
        lease.discard()
    assert len(pool) == 0 and pool.stats()["discarded"] == 1
    with pytest.raises(RuntimeError, match="once"):
        with lease:
            pass
    with pytest.raises(TypeError):
        Lease()
    stats_add_up(pool)


def test_borrow_timeout_argument():
    pool = ObjectPool(Obj, max_size=1)
    with pool.borrow():
        with pytest.raises(TimeoutError):
            with pool.borrow(0.01):
                pass
    stats_add_up(pool)


# ------------------------------------------------------------- fast call entries
def test_fast_entries_installed_on_gil_builds():
    import sys
    import sysconfig

    from fastmaps import _pool
    if sysconfig.get_config_var("Py_GIL_DISABLED") or sys.implementation.name != "cpython":
        assert _pool._FAST_ENTRIES == frozenset()
    else:
        assert _pool._FAST_ENTRIES == {"ObjectPool.get", "ObjectPool.borrow",
                                       "Lease.__exit__"}


def test_call_shapes_outside_the_fast_entries_behave_as_before():
    # The entries only take get()/borrow() without arguments and __exit__ with exactly
    # three positional ones; every other shape goes through the generated wrappers.
    pool = ObjectPool(Obj, max_size=1)
    held = pool.get(timeout=None)
    with pytest.raises(TimeoutError):
        pool.get(0)
    with pytest.raises(TimeoutError):
        pool.get(timeout=0)
    with pytest.raises(TypeError, match="at most 1 positional"):
        pool.get(1, 2)
    with pytest.raises(TypeError, match="unexpected keyword"):
        pool.get(wait=1)
    with pytest.raises(TypeError):
        ObjectPool.get(object())
    assert ObjectPool.get.__name__ == "get" and "timeout" in ObjectPool.get.__doc__
    pool.put(held)
    with pytest.raises(TypeError, match="at most 1 positional"):
        pool.borrow(1, 2)
    with pytest.raises(TypeError, match="unexpected keyword"):
        pool.borrow(discard=True)
    lease = pool.borrow(timeout=1, discard_on_error=True)
    with pytest.raises(TypeError):
        lease.__enter__(1)
    o = lease.__enter__()
    with pytest.raises(TypeError, match="3 positional"):
        lease.__exit__(None, None)
    with pytest.raises(TypeError, match="3 positional"):
        lease.__exit__(None, None, None, None)
    assert lease.__exit__(exc_type=KeyError, exc=None, tb=None) is False
    assert lease.obj is None and len(pool) == 0  # discard_on_error: dropped
    lease = pool.borrow()
    assert lease.__enter__() is not o
    assert lease.__exit__(None, None, None) is False
    assert lease.__exit__(None, None, None) is False  # finished: no-op
    assert len(pool) == 1
    stats_add_up(pool)


def test_unbound_and_bound_method_calls():
    pool = ObjectPool(Obj)
    get, put, borrow = ObjectPool.get, ObjectPool.put, ObjectPool.borrow
    o = get(pool)
    put(pool, o)
    assert pool.get() is o
    pool.put(o)
    bound_get = pool.get
    assert bound_get() is o
    with borrow(pool) as o2:
        assert o2 is not o
    exit_ = Lease.__exit__
    lease = pool.borrow()
    o3 = Lease.__enter__(lease)
    assert exit_(lease, None, None, None) is False
    assert o3 is o2
    pool.put(o)
    stats_add_up(pool)


# --------------------------------------------------------------------------- reset
def test_reset_runs_on_put_before_reuse():
    seen = []

    def reset(o):
        seen.append(o)
        o.dirty = False

    pool = ObjectPool(Obj, reset=reset)
    o = pool.get()
    o.dirty = True
    pool.put(o)
    assert seen == [o] and not o.dirty
    with pool.borrow() as o2:
        o2.dirty = True
    assert seen == [o, o2] and not o2.dirty
    stats_add_up(pool)


def test_reset_returning_false_discards():
    pool = ObjectPool(bytearray, reset=lambda b: len(b) <= 16 and (b.clear() or True))
    b = pool.get()
    b.extend(b"x" * 100)
    pool.put(b)  # too big: dropped
    assert len(pool) == 0
    c = pool.get()
    c.extend(b"abc")
    pool.put(c)
    assert len(pool) == 1 and pool.get() is c and c == b""
    pool.put(c)
    s = stats_add_up(pool)
    assert s["discarded"] == 1 and s["callback_errors"] == 0


def test_reset_raising_discards_and_propagates():
    def reset(o):
        if o.dirty:
            raise RuntimeError("cannot reset")

    pool = ObjectPool(Obj, reset=reset, max_size=1)
    o = pool.get()
    o.dirty = True
    with pytest.raises(RuntimeError, match="cannot reset"):
        pool.put(o)
    s = stats_add_up(pool)
    assert s["in_use"] == 0 and s["idle"] == 0 and s["discarded"] == 1
    assert s["callback_errors"] == 1
    # capacity was freed: a new object can be made at once
    o2 = pool.get(timeout=0)
    assert o2 is not o
    pool.put(o2)
    # the failed object was not kept: putting it again is "nothing checked out"
    with pytest.raises(ValueError):
        pool.put(o)


def test_reset_error_in_borrow_chains_body_error():
    def reset(o):
        raise RuntimeError("reset failed")

    pool = ObjectPool(Obj, reset=reset)
    with pytest.raises(RuntimeError, match="reset failed") as info:
        with pool.borrow():
            raise KeyError("body")
    assert isinstance(info.value.__context__, KeyError)
    s = stats_add_up(pool)
    assert s["in_use"] == 0 and s["discarded"] == 1


def test_reset_may_reenter_pool():
    pool = None

    def reset(o):
        # re-entrancy: use the pool from inside a callback (put() would recurse here)
        other = pool.get()
        assert other is not o
        pool.discard(other)

    pool = ObjectPool(Obj, reset=reset)
    a = pool.get()
    pool.put(a)
    stats_add_up(pool)


# --------------------------------------------------------------------------- validate
def test_validate_false_discards_and_tries_next():
    pool = ObjectPool(Obj, validate=lambda o: not o.dirty)
    a, b, c = pool.get(), pool.get(), pool.get()
    a.dirty = b.dirty = True
    for o in (c, a, b):
        pool.put(o)
    # LIFO: b, then a (both invalid, discarded), then c
    assert pool.get() is c
    s = stats_add_up(pool)
    assert s["invalid"] == 2 and s["discarded"] == 2 and len(pool) == 0
    # nothing idle: a new object from the factory (validate is not run on new objects)
    d = pool.get()
    assert d not in (a, b, c)
    pool.put(c)
    pool.put(d)
    stats_add_up(pool)


def test_validate_raising_discards_and_propagates():
    def validate(o):
        if o.dirty:
            raise OSError("health check failed")
        return True

    pool = ObjectPool(Obj, validate=validate, max_size=2)
    a, b = pool.get(), pool.get()
    b.dirty = True
    pool.put(a)
    pool.put(b)
    with pytest.raises(OSError, match="health check"):
        pool.get()
    s = stats_add_up(pool)
    assert s["discarded"] == 1 and s["callback_errors"] == 1 and s["in_use"] == 0
    assert pool.get() is a
    c = pool.get(timeout=0)  # the discarded object's capacity was freed
    assert c is not b
    pool.put(a)
    pool.put(c)
    stats_add_up(pool)


# --------------------------------------------------------------------------- factory
def test_factory_raising_propagates_and_frees_capacity():
    fail = [True]

    def factory():
        if fail[0]:
            raise MemoryError("no memory for you")
        return Obj()

    pool = ObjectPool(factory, max_size=1)
    with pytest.raises(MemoryError):
        pool.get()
    s = stats_add_up(pool)
    assert s["misses"] == 1 and s["created"] == 0 and s["callback_errors"] == 1
    fail[0] = False
    o = pool.get(timeout=0)  # capacity was released
    pool.put(o)
    stats_add_up(pool)


def test_factory_raising_base_exception():
    def factory():
        raise KeyboardInterrupt

    pool = ObjectPool(factory, max_size=1)
    with pytest.raises(KeyboardInterrupt):
        pool.get()
    assert pool.stats()["in_use"] == 0
    stats_add_up(pool)


# --------------------------------------------------------------------------- bounds
def test_max_idle_drops_extras():
    pool = ObjectPool(Obj, max_idle=2)
    objs = [pool.get() for _ in range(5)]
    for o in objs:
        pool.put(o)
    assert len(pool) == 2
    s = stats_add_up(pool)
    assert s["discarded"] == 3


def test_max_idle_zero_keeps_nothing():
    pool = ObjectPool(Obj, max_idle=0)
    a = pool.get()
    pool.put(a)
    assert len(pool) == 0
    assert pool.get() is not a
    assert pool.stats()["created"] == 2


def test_max_idle_prefers_dropping_victims(no_auto_gc):
    pool = ObjectPool(Obj, max_idle=2)
    a, b, c = pool.get(), pool.get(), pool.get()
    pool.put(a)
    pool.put(b)
    gc.collect()  # a, b -> victim tier
    pool.put(c)  # full: an old victim is dropped, the fresh object is kept
    assert len(pool) == 2
    assert pool.get() is c
    pool.put(c)
    stats_add_up(pool)


def test_max_size_timeout():
    pool = ObjectPool(Obj, max_size=2)
    a, b = pool.get(), pool.get()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="max_size"):
        pool.get(timeout=0.15)
    elapsed = time.monotonic() - t0
    assert 0.14 <= elapsed < 5.0
    with pytest.raises(TimeoutError):
        pool.get(timeout=0)
    s = stats_add_up(pool)
    assert s["waits"] == 2 and s["timeouts"] == 2 and s["in_use"] == 2
    pool.put(a)
    assert pool.get(timeout=0) is a
    pool.put(a)
    pool.put(b)
    stats_add_up(pool)


def test_max_size_waiter_is_woken_by_put():
    pool = ObjectPool(Obj, max_size=1)
    a = pool.get()
    got = []
    t = threading.Thread(target=lambda: got.append(pool.get(timeout=10)))
    t.start()
    deadline = time.monotonic() + 5
    while pool.stats()["waiting"] == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert pool.stats()["waiting"] == 1
    pool.put(a)
    t.join(10)
    assert not t.is_alive() and got == [a]
    s = stats_add_up(pool)
    assert s["waits"] == 1 and s["timeouts"] == 0 and s["in_use"] == 1


def test_max_size_waiter_is_woken_by_discard():
    pool = ObjectPool(Obj, max_size=1)
    a = pool.get()
    got = []
    t = threading.Thread(target=lambda: got.append(pool.get(timeout=10)))
    t.start()
    deadline = time.monotonic() + 5
    while pool.stats()["waiting"] == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    pool.discard(a)
    t.join(10)
    assert not t.is_alive() and len(got) == 1 and got[0] is not a
    stats_add_up(pool)


def test_close_wakes_all_waiters():
    pool = ObjectPool(Obj, max_size=1)
    a = pool.get()
    results = []

    def waiter():
        try:
            pool.get(timeout=30)
            results.append("got")
        except PoolClosedError:
            results.append("closed")

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while pool.stats()["waiting"] < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert pool.stats()["waiting"] == 3
    t0 = time.monotonic()
    pool.close()
    for t in threads:
        t.join(10)
    assert time.monotonic() - t0 < 5
    assert results == ["closed"] * 3
    pool.put(a)  # an outstanding object can still be given back after close
    s = stats_add_up(pool)
    assert s["in_use"] == 0 and s["idle"] == 0 and s["waiting"] == 0


@pytest.mark.parametrize("bad", [-1, -0.5, float("nan"), "1", True])
def test_bad_timeout(bad):
    pool = ObjectPool(Obj, max_size=1)
    with pytest.raises((ValueError, TypeError)):
        pool.get(timeout=bad)
    assert pool.stats()["in_use"] == 0


def test_timeout_ignored_by_unbounded_pool():
    pool = ObjectPool(Obj)
    a = pool.get(timeout=0)
    b = pool.get(timeout=0)
    assert a is not b


# --------------------------------------------------------------------------- close
def test_close_semantics():
    pool = ObjectPool(Obj)
    a, b = pool.get(), pool.get()
    pool.put(a)
    assert not pool.closed
    pool.close()
    assert pool.closed and len(pool) == 0
    with pytest.raises(PoolClosedError):
        pool.get()
    with pytest.raises(PoolClosedError):
        with pool.borrow():
            pass
    with pytest.raises(PoolClosedError):
        pool.prefill(3)
    pool.put(b)  # accepted and dropped
    assert len(pool) == 0
    assert pool.clear() == 0
    pool.close()  # idempotent
    s = stats_add_up(pool)
    assert s["in_use"] == 0 and s["discarded"] == 2
    assert isinstance(PoolClosedError("x"), RuntimeError)


def test_lease_finishing_after_close():
    pool = ObjectPool(Obj)
    with pool.borrow():
        pool.close()
    assert pool.stats()["in_use"] == 0 and len(pool) == 0


def test_pool_context_manager_closes():
    with ObjectPool(Obj) as pool:
        pool.put(pool.get())
        assert len(pool) == 1
    assert pool.closed and len(pool) == 0


# --------------------------------------------------------------------------- prefill / clear
def test_prefill_and_clear():
    pool = ObjectPool(Obj)
    assert pool.prefill(5) == 5
    assert len(pool) == 5
    assert pool.prefill(3) == 0  # already 5 idle
    assert pool.prefill(7) == 2
    s = stats_add_up(pool)
    assert s["created"] == 7 and s["misses"] == 0
    o = pool.get()
    assert pool.clear() == 6
    assert len(pool) == 0
    pool.put(o)
    s = stats_add_up(pool)
    assert s["discarded"] == 6


def test_prefill_respects_bounds():
    assert ObjectPool(Obj, max_idle=3).prefill(10) == 3
    pool = ObjectPool(Obj, max_size=4)
    a = pool.get()
    assert pool.prefill(10) == 3
    pool.put(a)
    stats_add_up(pool)


def test_prefill_factory_error_keeps_made_objects():
    n = [0]

    def factory():
        n[0] += 1
        if n[0] == 3:
            raise ValueError("third one fails")
        return Obj()

    pool = ObjectPool(factory)
    with pytest.raises(ValueError):
        pool.prefill(5)
    assert len(pool) == 2
    s = stats_add_up(pool)
    assert s["callback_errors"] == 1


# --------------------------------------------------------------------------- GC victim tier
def test_idle_objects_die_after_two_gc_cycles(no_auto_gc):
    pool = ObjectPool(Obj)
    objs = [pool.get() for _ in range(6)]
    refs = [weakref.ref(o) for o in objs]
    for o in objs:
        pool.put(o)
    del objs, o
    gc.collect()
    assert all(r() is not None for r in refs)  # first cycle: moved to the victim tier
    assert len(pool) == 6
    stats_add_up(pool)
    gc.collect()
    assert all(r() is None for r in refs)  # second cycle: released
    s = stats_add_up(pool)
    assert len(pool) == 0 and s["gc_released"] == 6 and s["discarded"] == 6


def test_reused_objects_survive_gc(no_auto_gc):
    pool = ObjectPool(Obj)
    a = pool.get()
    ref = weakref.ref(a)
    pool.put(a)
    del a
    for _ in range(5):
        gc.collect()
        o = pool.get()  # reused between cycles (from the victim tier)
        assert o is ref()
        pool.put(o)
        del o
    assert ref() is not None
    s = stats_add_up(pool)
    assert s["gc_released"] == 0 and s["created"] == 1


def test_young_collections_do_not_rotate_by_default(no_auto_gc):
    # On free-threaded builds the collector has no generations: every collection,
    # whatever generation it reports (gc.collect(0) reports 0, automatic ones too), scans
    # the whole heap, so each one is a full cycle and rotates (see the module essay).
    pool = ObjectPool(Obj)
    a = pool.get()
    ref = weakref.ref(a)
    pool.put(a)
    del a
    for _ in range(5):
        gc.collect(0)
        gc.collect(1)
    if _pool._FREE_THREADED:
        assert ref() is None
    else:
        assert ref() is not None
    pool2 = ObjectPool(Obj, gc_generation=0)
    b = pool2.get()
    ref2 = weakref.ref(b)
    pool2.put(b)
    del b
    gc.collect(0)
    gc.collect(0)
    assert ref2() is None


def test_gc_release_off(no_auto_gc):
    pool = ObjectPool(Obj, gc_release=False)
    a = pool.get()
    ref = weakref.ref(a)
    pool.put(a)
    del a
    for _ in range(3):
        gc.collect()
    assert ref() is not None and len(pool) == 1
    assert pool.clear() == 1
    assert ref() is None


def test_pool_is_not_kept_alive_by_gc_registry(no_auto_gc):
    pool = ObjectPool(Obj)
    pool.put(pool.get())
    ref = weakref.ref(pool)
    del pool
    assert ref() is None


def test_reference_cycle_through_cached_object_is_collected(no_auto_gc):
    # gc_release=False: the object stays in the per-thread cache slot (raw C storage),
    # so only the patched tp_traverse/tp_clear can make this cycle collectable.
    pool = ObjectPool(Obj, gc_release=False)
    o = pool.get()
    o.pool = pool
    pool.put(o)
    rp, ro = weakref.ref(pool), weakref.ref(o)
    assert o in gc.get_referents(pool)  # visible through the patched tp_traverse
    del pool, o
    gc.collect()
    assert rp() is None and ro() is None


def test_finalizer_using_pool_during_gc_release(no_auto_gc):
    events = []

    class Fin(Obj):
        def __del__(self):
            # runs when the victim tier drops us, inside the GC callback
            x = pool.get()
            pool.put(x)
            events.append("del")

    pool = ObjectPool(Fin)
    a, b = pool.get(), pool.get()
    pool.put(a)
    pool.put(b)
    del a, b
    gc.collect()
    gc.collect()
    assert events.count("del") >= 2
    stats_add_up(pool)


# --------------------------------------------------------------------------- misc API
def test_stats_keys():
    pool = ObjectPool(Obj, max_idle=3, max_size=5)
    assert set(pool.stats()) == {
        "gets", "puts", "hits", "misses", "created", "discarded", "invalid",
        "gc_released", "callback_errors", "waits", "timeouts", "idle", "in_use",
        "high_water", "waiting", "max_idle", "max_size"}
    assert pool.stats()["max_idle"] == 3 and pool.max_size == 5 and pool.max_idle == 3
    assert ObjectPool(Obj).max_size is None


def test_generic_alias():
    alias = ObjectPool[bytearray]
    assert isinstance(alias, types.GenericAlias)
    assert alias.__origin__ is ObjectPool and alias.__args__ == (bytearray,)
    assert isinstance(Lease[int], types.GenericAlias)


def test_repr_and_pickle():
    pool = ObjectPool(Obj, max_size=3)
    assert "idle=0" in repr(pool) and "max_size=3" in repr(pool)
    with pytest.raises(TypeError):
        pickle.dumps(pool)
    pool.close()
    assert "closed" in repr(pool)


@pytest.mark.parametrize("kwargs, exc, msg", [
    (dict(factory=None), TypeError, "factory must be callable"),
    (dict(factory=Obj, reset=1), TypeError, "reset must be callable"),
    (dict(factory=Obj, validate="x"), TypeError, "validate must be callable"),
    (dict(factory=Obj, max_idle=-1), ValueError, "max_idle must be >= 0"),
    (dict(factory=Obj, max_idle=1.5), TypeError, "max_idle must be an int"),
    (dict(factory=Obj, max_size=0), ValueError, "max_size must be >= 1"),
    (dict(factory=Obj, max_size=True), TypeError, "max_size must be an int"),
    (dict(factory=Obj, local_cache=-1), ValueError, "local_cache must be >= 0"),
    (dict(factory=Obj, local_cache=1000), ValueError, "local_cache must be <= 64"),
    (dict(factory=Obj, local_cache=None), TypeError, "local_cache"),
    (dict(factory=Obj, gc_release=1), TypeError, "gc_release must be a bool"),
    (dict(factory=Obj, gc_generation=3), ValueError, "gc_generation"),
])
def test_bad_arguments(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        ObjectPool(**kwargs)


def test_positional_options_rejected_and_reinit():
    with pytest.raises(TypeError):
        ObjectPool(Obj, None)
    pool = ObjectPool(Obj)
    with pytest.raises(TypeError, match="twice"):
        pool.__init__(Obj)
    with pytest.raises(TypeError):
        pool.prefill("3")
    with pytest.raises(ValueError):
        pool.prefill(-1)


def test_final_class():
    with pytest.raises(TypeError):
        type("Sub", (ObjectPool,), {})


@pytest.mark.parametrize("local_cache", [0, 1, 4, 64])
def test_local_cache_sizes(local_cache):
    pool = ObjectPool(Obj, local_cache=local_cache)
    objs = [pool.get() for _ in range(100)]
    for o in objs:
        pool.put(o)
    assert len(pool) == 100
    stats_add_up(pool)
    got = {id(pool.get()) for _ in range(100)}
    assert got == {id(o) for o in objs}
    assert pool.stats()["misses"] == 100
