"""Thread stress tests with exact post-conditions (seeded, bounded in time)."""
import random
import threading
import time

import pytest

from fastmaps import SnapshotMap

from ._threads import run_threads


pytestmark = pytest.mark.usefixtures("fast_switching")


def test_batch_transfers_keep_total_for_every_reader():
    accounts, total_each = 20, 100
    m = SnapshotMap({f"acct{i}": total_each for i in range(accounts)})
    total = accounts * total_each
    stop = threading.Event()
    reads = [0]

    def writer(seed):
        rnd = random.Random(seed)
        for _ in range(3000):
            a, b = rnd.sample(range(accounts), 2)
            amount = rnd.randrange(1, 20)
            with m.batch() as tx:
                tx[f"acct{a}"] -= amount
                tx[f"acct{b}"] += amount
                if rnd.random() < 0.1:
                    tx["tmp"] = 1         # published together with the transfer, then removed
                    del tx["tmp"]

    def reader():
        while not stop.is_set():
            s = m.snapshot()
            assert sum(s.values()) == total
            assert sum(v for _, v in m.items()) == total      # one version per view
            assert sum(m.values()) == total
            reads[0] += 1

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        run_threads([lambda s=s: writer(s) for s in range(3)])
    finally:
        stop.set()
        for t in readers:
            t.join(30)
    assert sum(m.values()) == total and reads[0] > 10, reads
    m._check(rehash=True)


def test_cas_increments_are_exact():
    n_threads, per_thread = 4, 2000
    m = SnapshotMap({"counter": 0})
    retries = [0]

    def incr():
        for _ in range(per_thread):
            while True:
                cur = m["counter"]
                if m.compare_and_swap("counter", cur, cur + 1):
                    break
                retries[0] += 1

    run_threads([incr] * n_threads)
    assert m["counter"] == n_threads * per_thread


def test_load_or_store_single_winner():
    m = SnapshotMap()
    wins = []

    def worker(tid):
        mine = 0
        for k in range(500):
            value, loaded = m.load_or_store(k, tid)
            if not loaded:
                assert value == tid
                mine += 1
            else:
                assert m[k] == value
        wins.append(mine)

    run_threads([lambda t=t: worker(t) for t in range(4)])
    assert sum(wins) == 500 and len(m) == 500


def test_iteration_never_sees_mixed_versions():
    size = 300
    m = SnapshotMap({i: 0 for i in range(size)})
    stop = threading.Event()
    seen = {"empty": 0, "full": 0}

    def writer():
        rnd = random.Random(11)
        for gen in range(1, 1500):
            r = rnd.random()
            if r < 0.3:
                m.clear()
            elif r < 0.7:
                m.replace({i: gen for i in range(size)})
            else:
                with m.batch() as b:
                    for i in range(size):
                        b[i] = gen

    def reader():
        while not stop.is_set():
            items = list(m.items())
            if not items:
                seen["empty"] += 1
                continue
            gens = {v for _, v in items}
            assert len(items) == size and len(gens) == 1, "mixed version"
            keys = list(m)
            assert len(keys) in (0, size)
            seen["full"] += 1

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        run_threads([writer])
    finally:
        stop.set()
        for t in readers:
            t.join(30)
    assert seen["full"] > 10, seen
    m._check(rehash=True)


def test_mixed_writers_match_serial_model():
    # disjoint key ranges per thread: the final state is exactly known
    m = SnapshotMap()

    def worker(tid):
        rnd = random.Random(tid)
        mine = {}
        for step in range(1500):
            k = (tid, rnd.randrange(100))
            r = rnd.random()
            if r < 0.5:
                m[k] = mine[k] = step
            elif r < 0.7:
                assert m.pop(k, None) == mine.pop(k, None)
            elif r < 0.8:
                with m.batch() as b:
                    b[k] = mine[k] = -step
            elif r < 0.9:
                assert m.swap(k, step) == ((mine[k], True) if k in mine else (None, False))
                mine[k] = step
            else:
                m.update({k: step})
                mine[k] = step
        return mine

    results = {}
    run_threads([lambda t=t: results.__setitem__(t, worker(t)) for t in range(4)])
    expect = {}
    for mine in results.values():
        expect.update(mine)
    assert m == expect
    m._check(rehash=True)


def test_reentrant_writes_across_threads_do_not_deadlock():
    m = SnapshotMap()

    class Key:
        def __init__(self, i):
            self.i = i

        def __hash__(self):
            return 1                              # all collide: __eq__ always runs

        def __eq__(self, other):
            try:
                m["inner"] = self.i               # re-entrant: RuntimeError, swallowed
            except RuntimeError:
                pass
            time.sleep(0)                         # let other threads run
            return isinstance(other, Key) and other.i == self.i

    def worker(tid):
        for j in range(100):
            m[Key(tid * 1000 + j)] = j
            assert m.get(Key(tid * 1000 + j)) == j

    run_threads([lambda t=t: worker(t) for t in range(3)], timeout=60)
    assert len([k for k in m if isinstance(k, Key)]) == 300
    m._check()


def test_writers_queue_behind_a_batch_and_all_get_through():
    # while a batch holds the writer lock (running user code, so the GIL is released),
    # other writers must block; after the batch publishes, every one of them completes
    # and the batch's writes are never interleaved with theirs
    m = SnapshotMap()
    done = []
    started = threading.Barrier(5)

    def writer(i):
        started.wait()
        for j in range(50):
            m[(i, j)] = j
        done.append(i)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    with m.batch() as b:
        for t in threads:
            t.start()
        started.wait()
        for j in range(200):
            b[("batch", j)] = j
            if j % 20 == 0:
                time.sleep(0.001)         # other threads run; they cannot write
        assert done == [] and len(m) == 0
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a writer never got the lock"
    assert sorted(done) == [0, 1, 2, 3]
    assert len(m) == 200 + 4 * 50
    m._check()


def test_writer_lock_contention_with_gil_releasing_eq_is_exclusive():
    # keys whose __eq__ releases the GIL while a writer holds the lock; several threads
    # contend.  __eq__ counts the writes inside it (reads run it too, lock-free, and are
    # not counted): never more than one at a time.  Exact CAS increments check that no
    # update is lost.
    m = SnapshotMap()
    tl = threading.local()
    inside = [0]
    most = [0]

    class Slow:
        def __init__(self, i):
            self.i = i

        def __hash__(self):
            return self.i % 3                     # collide: __eq__ runs under the lock

        def __eq__(self, other):
            writing = getattr(tl, "writing", False)
            if writing:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0)                         # release the GIL
            if writing:
                inside[0] -= 1
            return isinstance(other, Slow) and other.i == self.i

    keys = [Slow(i) for i in range(6)]
    for k in keys:
        m[k] = 0

    def worker(tid):
        rnd = random.Random(tid)
        for _ in range(150):
            k = keys[rnd.randrange(6)]
            while True:                           # an exact CAS increment
                old = m[k]
                tl.writing = True
                try:
                    ok = m.compare_and_swap(k, old, old + 1)
                finally:
                    tl.writing = False
                if ok:
                    break

    run_threads([lambda t=t: worker(t) for t in range(4)], timeout=120)
    assert most[0] == 1, f"{most[0]} writes were inside the writer lock at once"
    assert sum(m[k] for k in keys) == 4 * 150
    m._check()
