"""Regression tests for issue 11's ObjectPool findings: objects made with __new__, a reset
that re-enters put(), a garbage collection started inside clear()/close(), prefill()
against max_idle, infinite timeouts and non-bool flags."""
import gc
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from fastmaps import ObjectPool, PoolClosedError
from fastmaps._pool import Lease


class Obj:
    pass


def consistent(pool):
    s = pool.stats()
    assert s["created"] == s["idle"] + s["in_use"] + s["discarded"], s
    assert pool._check() is True
    return s


# ----------------------------------------------------------------- __new__ without __init__

def test_lease_made_with_new_cannot_be_entered():
    # Lease.__new__(Lease).__enter__() called a method of None: a segfault
    r = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        from fastmaps._pool import Lease
        lease = Lease.__new__(Lease)
        print(repr(lease), lease.pool, lease.obj)
        try:
            lease.__enter__()
        except TypeError as e:
            print("TypeError:", e)
        print(lease.__exit__(None, None, None))
    """)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "TypeError: Lease objects are created by ObjectPool.borrow()" in r.stdout
    assert r.stdout.splitlines()[-1] == "False"


def test_pool_made_with_new_says_init_was_not_called():
    pool = ObjectPool.__new__(ObjectPool)
    for call in (pool.get, lambda: pool.get(timeout=0), lambda: pool.prefill(2),
                 lambda: pool.borrow().__enter__()):
        with pytest.raises(TypeError, match=r"__init__\(\) was not called"):
            call()
    with pytest.raises(ValueError):
        pool.put(Obj())                     # nothing was handed out
    assert len(pool) == 0 and pool.clear() == 0
    consistent(pool)
    pool.__init__(Obj, gc_release=False)     # a late __init__ makes it a working pool
    a = pool.get()
    pool.put(a)
    assert pool.get() is a
    consistent(pool)


def test_pool_whose_init_failed_is_not_usable_until_init_succeeds():
    pool = ObjectPool.__new__(ObjectPool)
    with pytest.raises(ValueError):
        pool.__init__(Obj, local_cache=1000)
    with pytest.raises(TypeError, match="was not called"):
        pool.get()
    pool.__init__(Obj, local_cache=8, gc_release=False)
    pool.put(pool.get())
    assert len(pool) == 1
    consistent(pool)


# ----------------------------------------------------------------- reset re-entering put

def test_reset_reentering_put_of_the_same_object_is_a_double_put():
    errors = []
    pool = None

    def reset(o):
        try:
            pool.put(o)                     # used to recurse, counting o returned each time
        except ValueError as e:
            errors.append(str(e))

    pool = ObjectPool(Obj, reset=reset, gc_release=False)
    a = pool.get()
    pool.put(a)
    assert len(errors) == 1 and "double put" in errors[0]
    s = consistent(pool)
    assert s["in_use"] == 0 and s["idle"] == 1 and s["puts"] == 1
    assert pool.get() is a


def test_reset_reentering_put_error_propagates_and_discards():
    pool = None

    def reset(o):
        pool.put(o)

    pool = ObjectPool(Obj, reset=reset, max_size=2, gc_release=False)
    a = pool.get()
    with pytest.raises(ValueError, match="double put"):
        pool.put(a)
    s = consistent(pool)
    assert s["in_use"] == 0 and s["idle"] == 0 and s["discarded"] == 1
    assert s["callback_errors"] == 1
    pool.get(timeout=0), pool.get(timeout=0)  # max_size still bounds: 2 objects, no more
    with pytest.raises(TimeoutError):
        pool.get(timeout=0)


def test_reset_cannot_discard_or_double_count_the_object_being_returned():
    pool = None
    seen = []

    def reset(o):
        for op in (pool.discard, pool.put):
            try:
                op(o)
            except ValueError as e:
                seen.append(op.__name__)
        stranger = Obj()                    # in_use is 1: the object being returned
        try:
            pool.put(stranger)
        except ValueError as e:
            seen.append("stranger")

    pool = ObjectPool(Obj, reset=reset, gc_release=False)
    a = pool.get()
    pool.put(a)
    assert seen == ["discard", "put", "stranger"]
    s = consistent(pool)
    assert s["in_use"] == 0 and s["idle"] == 1 and s["discarded"] == 0


def test_reset_may_put_another_checked_out_object():
    pool = None
    others = []

    def reset(o):
        if others:
            pool.put(others.pop())

    pool = ObjectPool(Obj, reset=reset, gc_release=False)
    a, b = pool.get(), pool.get()
    others.append(b)
    pool.put(a)
    s = consistent(pool)
    assert s["in_use"] == 0 and s["idle"] == 2


def test_reset_via_lease_reentering_put():
    pool = None

    def reset(o):
        pool.put(o)

    pool = ObjectPool(Obj, reset=reset, gc_release=False)
    with pytest.raises(ValueError, match="double put"):
        with pool.borrow():
            pass
    assert consistent(pool)["in_use"] == 0


# ----------------------------------------------------------------- GC inside clear()/close()

@pytest.mark.skipif(sys.version_info >= (3, 12),
                    reason="3.12+ runs collections from the eval loop, never inside C code")
@pytest.mark.parametrize("method", ["clear", "close"])
@pytest.mark.parametrize("local_cache", [0, 4])
@pytest.mark.parametrize("primary", [0, 3])
def test_collection_started_inside_clear_or_close_counts_once(method, local_cache, primary):
    # the lists clear()/close() allocated mid-change could start a collection whose
    # victim rotation then saw (and counted) the victims a second time
    collections = []

    def watch(phase, info):
        if phase == "start":
            collections.append(info["generation"])

    started_inside = 0
    for threshold in range(1, 8):
        pool = ObjectPool(Obj, gc_generation=0, local_cache=local_cache)
        pool.prefill(12)
        held = [pool.get() for _ in range(primary)]
        gc.collect()                        # victims: the idle objects; gen-0 count 0
        for o in held:
            pool.put(o)                     # back to the shared stack / cache slot
        del held
        old = gc.get_threshold()
        gc.callbacks.append(watch)
        collections.clear()
        gc.set_threshold(threshold, 1, 1)   # collect at the next few allocations
        try:
            if method == "clear":           # (no bound method: no allocation before)
                pool.clear()
            else:
                pool.close()
        finally:
            gc.set_threshold(*old)
            gc.callbacks.remove(watch)
        started_inside += bool(collections)
        s = consistent(pool)
        assert s["idle"] == 0 and s["discarded"] == s["created"] == 12
    assert started_inside                   # the test did run a collection in there


def test_gc_rotation_inside_every_allocation_point_keeps_the_counts():
    # a collection at any point of a sequence of pool operations: the counters add up
    old = gc.get_threshold()
    pool = ObjectPool(Obj, gc_generation=0, local_cache=2, max_idle=20)
    try:
        gc.set_threshold(1, 1, 1)
        for i in range(200):
            objs = [pool.get() for _ in range(i % 7)]
            for o in objs:
                pool.put(o)
            if i % 5 == 0:
                pool.clear()
            if i % 11 == 0:
                pool.prefill(9)
    finally:
        gc.set_threshold(*old)
    consistent(pool)


# ----------------------------------------------------------------- prefill and max_idle

def test_prefill_rechecks_max_idle_after_the_factory_call():
    pool = None
    out = []

    def factory():
        if out:
            pool.put(out.pop())             # an object comes back meanwhile
        return Obj()

    pool = ObjectPool(factory, max_idle=1, gc_release=False)
    out.append(pool.get())
    assert pool.prefill(1) == 0             # the new object would exceed max_idle
    s = consistent(pool)
    assert s["idle"] == 1 and s["created"] == 2 and s["discarded"] == 1


def test_prefill_rechecks_max_idle_with_several_objects():
    pool = None
    out = []

    def factory():
        if out:
            pool.put(out.pop())
        return Obj()

    pool = ObjectPool(factory, max_idle=3, gc_release=False)
    held = [pool.get() for _ in range(3)]
    out.extend(held)
    del held
    made = pool.prefill(3)                  # kept one, then max_idle was reached
    s = consistent(pool)
    assert made == 1 and s["idle"] == 3 and s["in_use"] == 1
    assert s["created"] == 5 and s["discarded"] == 1


# ----------------------------------------------------------------- timeouts and flags

@pytest.mark.parametrize("timeout", [float("inf"), 1e300, 1e19, 1e10])
def test_huge_timeout_waits_forever(timeout):
    pool = ObjectPool(Obj, max_size=1, gc_release=False)
    a = pool.get()
    threading.Timer(0.2, pool.put, (a,)).start()
    t0 = time.monotonic()
    assert pool.get(timeout=timeout) is a   # used to raise OverflowError at once
    assert time.monotonic() - t0 >= 0.1
    consistent(pool)


def test_huge_timeout_wait_ends_with_close():
    pool = ObjectPool(Obj, max_size=1, gc_release=False)
    pool.get()
    threading.Timer(0.2, pool.close).start()
    with pytest.raises(PoolClosedError):
        pool.get(timeout=float("inf"))


def test_huge_timeout_with_a_free_object_returns_at_once():
    pool = ObjectPool(Obj, max_size=2, gc_release=False)
    with pool.borrow(timeout=float("inf")) as a:
        assert pool.get(timeout=float("inf")) is not a


@pytest.mark.parametrize("flag", [[], "x", 1, 0, None])
def test_borrow_discard_on_error_must_be_a_bool(flag):
    pool = ObjectPool(Obj, gc_release=False)
    with pytest.raises(TypeError, match="discard_on_error must be a bool"):
        pool.borrow(discard_on_error=flag)
    with pytest.raises(TypeError, match="discard_on_error must be a bool"):
        pool.borrow(None, discard_on_error=flag)
    assert isinstance(pool.borrow(discard_on_error=True), Lease)
    assert consistent(pool)["in_use"] == 0
