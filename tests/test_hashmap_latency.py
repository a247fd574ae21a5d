"""HashMap's latency machinery: a migration's new index is resident before the migration
scatters entries over it (prepared and populated ahead of the migration, or populated a
chunk per write before its first step), and that machinery keeps dict's semantics."""
import os
import random
import resource
import sys

import pytest

from fastmaps import HashMap


def _minflt():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


# Under a sanitizer with PYTHONMALLOC=malloc every new int is a malloc from the sanitizer's
# allocator, whose fresh pages and shadow memory fault too: the count is not ours.
_FOREIGN_FAULTS = (os.environ.get("PYTHONMALLOC", "").startswith("malloc")
                   or "san" in os.environ.get("LD_PRELOAD", ""))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page-fault counts: Linux")
@pytest.mark.skipif(_FOREIGN_FAULTS, reason="sanitizer allocator: its page faults are counted")
def test_inserts_after_a_growth_take_no_burst_of_page_faults():
    # The migration starting at 699,051 keys moves into a 2M-slot (8 MiB) index. Mapped
    # lazily and scattered over by the migration steps, it used to be faulted in within
    # the first ~200 inserts (about 3,000 faults, up to 128 per insert).
    m = HashMap()
    n = 699_051
    for k in range(n - 1):
        m[k * 7919] = None
    assert not m._progress()[0]
    migrations = m._progress()[2]
    before = _minflt()
    for k in range(n - 1, n + 200):
        m[k * 7919] = None
    faults = _minflt() - before
    assert m._progress()[2] == migrations + 1 and m._progress()[0]
    assert faults < 200, faults
    m._check()


def test_random_operations_with_prepared_indexes_match_dict(prefault):
    rnd = random.Random(5)
    m, d = HashMap(), {}
    for step in range(6000):
        op = rnd.random()
        k = rnd.randrange(400) if rnd.random() < 0.7 else f"s{rnd.randrange(300)}"
        if op < 0.5:
            m[k] = d[k] = step
        elif op < 0.85:
            assert m.pop(k, None) == d.pop(k, None)
        elif op < 0.9:
            assert (k in m) == (k in d)
        elif op < 0.93:
            for j in range(rnd.randrange(200)):
                m[("bulk", j)] = d[("bulk", j)] = j
        elif op < 0.95:
            for j in range(rnd.randrange(200)):
                m.pop(("bulk", j), None)
                d.pop(("bulk", j), None)
        elif op < 0.96:
            keep = rnd.random() < 0.5
            m.clear(keep_capacity=keep)
            d.clear()
        elif op < 0.97:
            m = m.copy()
        elif op < 0.98:
            m.reserve(rnd.randrange(600))
        elif op < 0.99:
            m.shrink_to_fit()
        elif d:
            assert m.popitem() == d.popitem()
        if step % 7 == 0:
            m._check()
            assert list(m.items()) == list(d.items())
    m._check()
    assert list(m.items()) == list(d.items())


def test_prepared_index_is_counted_and_freed(prefault):
    m = HashMap()
    sizes = set()
    for k in range(3000):
        m[k] = k
        sizes.add(sys.getsizeof(m))
        if k % 97 == 0:
            m._check()
    assert dict(m) == {k: k for k in range(3000)}
    m.clear()
    assert len(m) == 0 and m.stats()["index_slots"] == 0
    m._check()


def test_trim_is_bounded_per_write():
    # a shrinking migration compacts a log of 100,000 positions down to ~20,000: the write
    # that finished it used to free the ~40 segments past the new end at once
    m = HashMap.fromkeys(range(100_000))
    finishes = 0
    before = None
    for k in range(99_000):
        migrating, left = m._progress()[:2]
        if migrating and left <= 64:
            before = m.stats()["segments"]
        del m[k]
        if before is not None and not m._progress()[0]:
            finishes += 1
            assert before - m.stats()["segments"] <= 4
            before = None
    assert finishes >= 2
    for k in range(200):
        m[-k] = k
    assert m.stats()["segments"] <= 3
    m._check()
