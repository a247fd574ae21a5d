"""ObjectPool memory behaviour: no leak over a million get/put pairs (reference counts and
traced allocations), none on the error paths, none from creating and dropping pools."""
import gc
import sys
import tracemalloc

import pytest

from fastmaps import ObjectPool


class Obj:
    __slots__ = ("__weakref__",)


# Traced bytes that may come and go with the interpreter itself between two runs (free-
# threaded builds free some memory lazily: 4,624 bytes were seen once on 3.13t). Every run
# below repeats its operations thousands of times, so a leak of even one small object per
# iteration is far above this.
NOISE = 64 * 1024


def traced_growth(fn):
    """Bytes still allocated (traced) after fn() returns, compared with before."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()  # warm-up: lets the pool's own storage reach its steady-state size
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        fn()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before


def test_million_get_put_pairs_refcounts_stable():
    pool = ObjectPool(Obj)
    obj = pool.get()
    pool.put(obj)
    get, put = pool.get, pool.put
    rc_obj = sys.getrefcount(obj)
    rc_pool = sys.getrefcount(pool)
    rc_none = sys.getrefcount(None)
    for _ in range(1_000_000):
        o = get()
        put(o)
    del o
    assert sys.getrefcount(obj) == rc_obj
    assert sys.getrefcount(pool) == rc_pool
    if sys.version_info < (3, 12):  # None is immortal from 3.12 on
        assert abs(sys.getrefcount(None) - rc_none) < 100
    s = pool.stats()
    assert s["gets"] == s["puts"] == 1_000_001 and s["created"] == 1
    pool._check()


def test_million_pairs_no_traced_growth():
    pool = ObjectPool(bytearray)

    def run():
        get, put = pool.get, pool.put
        for _ in range(500_000):
            b = get()
            put(b)

    assert traced_growth(run) < NOISE
    assert pool.stats()["created"] == 1


@pytest.mark.parametrize("kwargs", [
    dict(reset=lambda b: None),
    dict(validate=lambda b: True),
    dict(max_size=4),
    dict(local_cache=0, max_idle=8),
])
def test_slow_paths_no_traced_growth(kwargs):
    pool = ObjectPool(bytearray, **kwargs)

    def run():
        for _ in range(20_000):
            a = pool.get()
            b = pool.get()
            pool.put(b)
            with pool.borrow():
                pass
            pool.put(a)

    assert traced_growth(run) < NOISE
    pool._check()


def test_error_paths_no_traced_growth():
    def bad_factory():
        raise ValueError("nope")

    def bad_reset(o):
        raise ValueError("nope")

    bad = ObjectPool(bad_factory, max_size=2)
    resetting = ObjectPool(Obj, reset=bad_reset)

    def run():
        for _ in range(5_000):
            with pytest.raises(ValueError):
                bad.get()
            o = resetting.get()
            with pytest.raises(ValueError):
                resetting.put(o)
            with pytest.raises(ValueError):
                resetting.put(o)  # nothing checked out

    assert traced_growth(run) < NOISE
    bad._check()
    resetting._check()
    assert resetting.stats()["in_use"] == 0


def test_pools_created_and_dropped_do_not_leak():
    def run():
        for _ in range(2_000):
            p = ObjectPool(bytearray, max_size=10)
            p.prefill(3)
            x = p.get()
            p.put(x)
            del p

    assert traced_growth(run) < NOISE


def test_cleared_pool_releases_objects():
    pool = ObjectPool(lambda: bytearray(1 << 16), gc_release=False)

    def run():
        objs = [pool.get() for _ in range(64)]
        for o in objs:
            pool.put(o)
        del objs
        assert pool.clear() == 64

    assert traced_growth(run) < NOISE
