"""HashMap's own behaviour: repr, the extras (presizing, keep-capacity clear, shrink,
stats), the incremental migration guarantees, and iteration while migrations move
entries. Its dict compatibility is tested, with SnapshotMap's, in test_dict_compat.py."""
import sys

import pytest

from fastmaps import HashMap

from ._tuning import tuned


def pairs(n, start=0):
    return [(f"k{i}", i) for i in range(start, start + n)]


# ---------------------------------------------------------------- repr

def test_view_repr():
    m = HashMap(a=1)
    assert repr(m.keys()) == "hashmap_keys(['a'])"
    assert repr(m.values()) == "hashmap_values([1])"
    assert repr(m.items()) == "hashmap_items([('a', 1)])"


def test_repr_of_self_reference_and_subclass():
    m = HashMap()
    m["me"] = m
    assert repr(m) == "HashMap({'me': ...})"

    class Sub(HashMap):
        pass
    assert repr(Sub(a=1)) == "Sub({'a': 1})" and repr(Sub()) == "Sub()"


# ---------------------------------------------------------------- sizes and extras

def test_sizeof_reports_storage():
    m = HashMap()
    empty = sys.getsizeof(m)
    m.update(pairs(10000))
    assert sys.getsizeof(m) > empty + 10000 * 16        # all-str keys: no stored hashes
    assert m.stats()["bytes"] == m.__sizeof__()
    str_only = sys.getsizeof(m)
    m[10**12] = 0                                         # one non-str key: its segment
    assert sys.getsizeof(m) == str_only + 2048 * 8        # gets a hash array
    n = HashMap((i, i) for i in range(10000))
    assert sys.getsizeof(n) > empty + 10000 * 24
    assert n.stats()["bytes"] == n.__sizeof__()


def test_with_capacity_reserve_starts_no_migration():
    m = HashMap.with_capacity(50000)
    assert m.capacity >= 50000
    before = m.stats()["migrations"]
    for i in range(50000):
        m[i] = i
    assert m.stats()["migrations"] == before
    m.reserve(120000)
    assert m.capacity >= 120000 and list(m) == list(range(50000))
    m._check()
    with pytest.raises(ValueError):
        HashMap.with_capacity(-1)


def test_large_presized_index_then_migrations():
    # an index of >= 2 MiB comes from its own mapping (with_capacity, reserve and
    # shrink_to_fit ask for huge pages); exercise it through growth, deletes and shrinking
    n = 400_000
    m = HashMap.with_capacity(n)
    assert m.stats()["index_slots"] * 4 >= 2 << 20
    ref = {}
    for i in range(n):
        m[i * 7919] = i
        ref[i * 7919] = i
    m._check()
    m.reserve(3 * n)
    for i in range(0, n, 3):
        del m[i * 7919]
        del ref[i * 7919]
    m.shrink_to_fit()
    m._check()
    assert m == ref and list(m) == list(ref)
    m.clear(keep_capacity=True)
    m.update(ref)
    m._check()
    assert list(m.items()) == list(ref.items())


def test_clear_keep_capacity_refills_without_migrating():
    m = HashMap(pairs(20000))
    slots = m.stats()["index_slots"]
    m.clear(keep_capacity=True)
    assert len(m) == 0 and m.stats()["index_slots"] == slots
    before = m.stats()["migrations"]
    m.update(pairs(20000, 1))
    assert m.stats()["migrations"] == before
    m._check()
    m.clear()
    assert m.stats()["index_slots"] == 0 and m.stats()["bytes"] < 1000


def test_shrink_to_fit_and_automatic_shrinking():
    m = HashMap(pairs(100000))
    big = m.stats()["bytes"]
    for k in list(m)[:-100]:
        del m[k]                      # delete-driven shrink migrations
    m._check()
    mid = m.stats()["bytes"]
    assert mid < big / 4
    m.shrink_to_fit()
    m._check()
    assert m.stats()["bytes"] <= mid and list(m.items()) == pairs(100, 99900)
    assert m.stats()["tombstones"] == 0


def test_stats_fields():
    s = HashMap(pairs(10)).stats()
    for field in ("len", "capacity", "index_slots", "tombstones", "migrating",
                  "migration_remaining", "bytes", "migrations", "forced_finishes"):
        assert field in s
    assert s["len"] == 10


# ---------------------------------------------------------------- incremental migration

def test_each_write_does_bounded_migration_work():
    """During a migration of a 100k+ entry map, no insert advances the migration cursor by
    more than the step budget: the work per write does not depend on the map's size."""
    from fastmaps import _hashmap
    step = _hashmap._set_tuning()["step"]     # (no arguments: reads, changes nothing)
    m = HashMap()
    i = 0
    while True:
        m[i] = i
        i += 1
        migrating, remaining, _, _ = m._progress()
        if migrating and remaining > 100000:
            break
    last = remaining
    steps = 0
    while migrating:
        m[i] = i
        i += 1
        steps += 1
        migrating, remaining, _, forced = m._progress()
        assert last - remaining <= step       # T_STEP positions per write at most
        last = remaining
    assert steps > 100000 // step and forced == 0
    m._check()


def test_churn_at_constant_size_keeps_memory_and_probes_bounded():
    m = HashMap()
    for i in range(10000):
        m[i] = i
    sizes = []
    for i in range(10000, 400000):
        m[i] = i
        del m[i - 10000]
        if i % 50000 == 0:
            sizes.append(m.stats()["bytes"])
    m._check()
    assert len(m) == 10000
    assert max(sizes) < 2 * min(sizes)
    assert m.stats()["index_slots"] <= 65536


def test_churn_of_one_key_keeps_the_log_bounded():
    # Deleting and re-inserting the same key reuses its DUMMY slot, so the index never
    # fills; the log must still be compacted (dict bounds its entries by its usable size).
    m = HashMap.fromkeys(range(100), 1)
    for _ in range(200000):
        del m[5]
        m[5] = 1
    m._check()
    st = m.stats()
    assert list(m) == [k for k in range(100) if k != 5] + [5]
    assert st["log_length"] <= st["index_slots"]
    assert st["bytes"] < 64 * 1024
    assert st["forced_finishes"] == 0


def test_inserts_during_a_shrink_from_a_long_log_fit_the_new_index():
    # A shrinking migration starts with a small index while ids up to the old log length
    # are still in use; inserts made while it runs append ids past that length. Every slot
    # must hold its id (and tag) exactly, with no forced finish.
    with tuned("default", hashmap=dict(sync_below=0, step=8)):
        m = HashMap.fromkeys(range(20000), 0)
        k = 0
        while True:
            del m[k]
            k += 1
            st = m.stats()
            if st["migrating"] and st["log_length"] > st["index_slots"]:
                break
        m._check()
        for j in range(100000, 100000 + 3000):
            m[j] = 1
            if j % 97 == 0:
                m._check()
        m._check()
        assert m._progress()[3] == 0
        assert list(m) == list(range(k, 20000)) + list(range(100000, 103000))


def test_reentrant_clear_keep_capacity_keeps_the_capacity():
    m = HashMap.with_capacity(1000)

    class ClearsAgain:
        def __del__(self):
            m["x"] = 1          # builds a tiny index of its own ...
            m.clear()           # ... and drops it while the outer clear runs

    m[1] = ClearsAgain()
    m.clear(keep_capacity=True)
    cap = m.capacity
    assert cap >= 1000
    started = m._progress()[2]
    for i in range(cap):
        m[i] = i
    m._check()
    assert m._progress()[2] == started, "an insert within capacity started a migration"


def test_capacity_during_a_migration_is_a_promise():
    with tuned("default", hashmap=dict(sync_below=0)):
        for n in (5000, 20000):
            m = HashMap()
            i = 0
            while not m._progress()[0] or len(m) < n:
                m[i] = i
                i += 1
            while not m._progress()[0]:        # stop inside a running migration
                m[i] = i
                i += 1
            started = m._progress()[2]
            for _ in range(m.capacity - len(m)):
                m[i] = i
                i += 1
            m._check()
            assert m._progress()[2] == started


# ---------------------------------------------------------------- iteration while entries move

@pytest.mark.parametrize("make_iter,n", [(iter, 200000), (reversed, 100000)])
def test_value_updates_during_iteration_keep_iterators_exact_while_entries_move(make_iter, n):
    m = HashMap()
    for i in range(n):
        m[i] = i
    for i in range(0, n, 3):
        del m[i]
    while not m._progress()[0]:
        m[("fill", len(m))] = 0
    expected = list(make_iter(list(m)))
    seen = []
    for k in make_iter(m):      # each update runs migration steps that move entries
        m[k] = -1
        seen.append(k)
    assert seen == expected
    if make_iter is iter:
        assert not m._progress()[0]     # the updates finished the migration
    m._check()


def test_iterator_whose_last_key_vanished_while_entries_moved_raises(tiny):
    m = HashMap.fromkeys(range(200))
    for i in range(0, 200, 2):
        del m[i]                 # holes: the next migration moves entries down
    i = 1000
    while not m._progress()[0]:
        m[i] = i
        i += 1
    it = iter(m)
    first = next(it)
    del m[first]
    m["new"] = 1                 # same size again; these writes move entries
    m["new"] = 2
    with pytest.raises(RuntimeError, match="keys changed"):
        list(it)


def test_keys_changed_error_then_stop_iteration_like_dict():
    for c in (dict.fromkeys(range(3)), HashMap.fromkeys(range(3))):
        it = iter(c)
        next(it)
        del c[0]
        c[0] = 1                      # same size; dict and HashMap both notice eventually
        try:
            list(it)
        except RuntimeError:
            assert list(it) == []     # after "keys changed", the iterator is finished
