"""Helpers shared by the thread tests (test_freethreading.py, test_snapshot_threads.py,
test_pool_threads.py): run target functions in threads and re-raise what they raised.
conftest.py's ``fast_switching`` fixture shortens the switch interval for them."""
import threading


def run_threads(targets, timeout=60, start_together=False):
    """Run each callable of `targets` in a thread of its own (all released together by a
    barrier if `start_together`), join them all, fail if one is still running after
    `timeout` seconds, and re-raise the first exception a target raised."""
    errors = []
    barrier = threading.Barrier(len(targets)) if start_together else None

    def wrap(fn):
        def run():
            try:
                if barrier is not None:
                    barrier.wait()
                fn()
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)
        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "deadlock or livelock: thread still running"
    if errors:
        raise errors[0]
