"""Reader throughput while a writer writes, on a free-threaded build (3.13t, GIL off).

    python -m benchmarks.bench_freethreaded [--quick] [--out benchmarks/results]

The question SnapshotMap answers: many threads read a map that one thread keeps writing.
Each configuration runs one writer thread that writes as fast as it can (``m[k] = v`` on
random keys of a 10,000-key map) and 1 or 2 reader threads doing ``get(k)`` on random
keys, for a fixed window; reported are the reads per second summed over the readers, the
writer's writes per second, and each reader's slowest batch of 1,000 reads (a reader
that blocks behind the writer shows it there). Contenders:

* ``SnapshotMap``: readers take no lock (an atomic load of the published version);
* ``dict``: a free-threaded dict shared without a lock (per-object critical sections
  inside CPython: correct for single operations, and readers contend with the writer on
  the dict's lock);
* ``dict + Lock``: the portable idiom, every read and write under one ``threading.Lock``;
* ``immutables.Map`` behind an atomic reference: readers read ``holder.map`` (an
  attribute load), the writer rebinds it to ``holder.map.set(k, v)`` (a rebinding is
  atomic in CPython);
* ``HashMap``: shared like the dict (its per-object critical sections).

Every configuration runs in its own subprocess, so that one contender's import cannot
change another's conditions: ``immutables`` (0.21) does not declare itself
free-threading compatible, so importing it re-enables the GIL; its runs set
``PYTHON_GIL=0`` (safe for this use: a Map is never mutated after it is built) and each
row records whether the GIL was on. On a GIL build the numbers only show the GIL's
serialisation. The machine's CPU count is recorded too: with 2 CPUs, a writer and two
readers share two cores, so the 2-reader rows measure oversubscription as much as
scaling. Writes freethreaded.json into --out.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time

N_KEYS = 10_000
BATCH = 1_000
CONTENDERS = ("SnapshotMap", "dict", "dict + Lock", "immutables.Map", "HashMap")


def _make(kind: str, keys):
    """(read(k), write(k, v)) closures over one shared structure."""
    if kind == "SnapshotMap":
        from fastmaps import SnapshotMap
        m = SnapshotMap(dict.fromkeys(keys, 0))
        return m.get, m.__setitem__
    if kind == "HashMap":
        from fastmaps import HashMap
        m = HashMap(dict.fromkeys(keys, 0))
        return m.get, m.__setitem__
    if kind == "dict":
        d = dict.fromkeys(keys, 0)
        return d.get, d.__setitem__
    if kind == "dict + Lock":
        d = dict.fromkeys(keys, 0)
        lock = threading.Lock()

        def read(k):
            with lock:
                return d.get(k)

        def write(k, v):
            with lock:
                d[k] = v
        return read, write
    if kind == "immutables.Map":
        import immutables

        class Holder:
            __slots__ = ("map",)
        h = Holder()
        h.map = immutables.Map(dict.fromkeys(keys, 0))

        def read(k):
            return h.map.get(k)

        def write(k, v):
            h.map = h.map.set(k, v)
        return read, write
    raise ValueError(kind)


def run_one(kind: str, readers: int, seconds: float) -> dict:
    """One configuration, in this process: returns the measured row."""
    import fastmaps  # noqa: F401  (its import must leave the GIL as it finds it)
    r = random.Random(7)
    keys = r.sample(range(1 << 40), N_KEYS)
    read, write = _make(kind, keys)
    plans = [[keys[r.randrange(N_KEYS)] for _ in range(BATCH)] for _ in range(64)]
    start = threading.Barrier(readers + 2)
    stop = threading.Event()
    reads = [0] * readers
    worst = [0.0] * readers
    writes = [0]

    def reader(j):
        rr = random.Random(j)
        start.wait()
        n = 0
        slowest = 0.0
        while not stop.is_set():
            plan = plans[rr.randrange(64)]
            t0 = time.perf_counter()
            for k in plan:
                read(k)
            dt = time.perf_counter() - t0
            if dt > slowest:
                slowest = dt
            n += BATCH
        reads[j] = n
        worst[j] = slowest

    def writer():
        rr = random.Random(99)
        start.wait()
        n = 0
        while not stop.is_set():
            plan = plans[rr.randrange(64)]
            for i, k in enumerate(plan):
                write(k, i)
            n += BATCH
        writes[0] = n

    threads = [threading.Thread(target=reader, args=(j,)) for j in range(readers)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    return {"contender": kind, "readers": readers, "seconds": elapsed,
            "reads_per_s": sum(reads) / elapsed, "writes_per_s": writes[0] / elapsed,
            "worst_batch_ms": max(worst) * 1e3, "gil_enabled": gil}


def _subprocess_row(kind: str, readers: int, seconds: float) -> dict:
    env = dict(os.environ)
    if kind == "immutables.Map":
        env["PYTHON_GIL"] = "0"
    else:
        env.pop("PYTHON_GIL", None)
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_freethreaded", "--one", kind,
         "--readers", str(readers), "--seconds", str(seconds)],
        env=env, capture_output=True, text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if out.returncode != 0:
        raise RuntimeError(f"{kind} with {readers} readers failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter windows, fewer repeats")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--readers", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=1.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.readers, args.seconds)))
        return 0

    import importlib.util
    from .harness import Results, progress
    seconds = 0.5 if args.quick else 1.0
    repeats = 3 if args.quick else 5
    # (found, not imported: importing immutables here would turn this process's GIL on)
    have_immutables = importlib.util.find_spec("immutables") is not None
    if not have_immutables:
        progress("[freethreaded] immutables is not installed: its rows are skipped")
    contenders = [c for c in CONTENDERS if c != "immutables.Map" or have_immutables]
    res = Results("freethreaded")
    res.extra.update(quick=args.quick, seconds=seconds, repeats=repeats, keys=N_KEYS,
                     batch=BATCH, gil_disabled_build=bool(
                         __import__("sysconfig").get_config_var("Py_GIL_DISABLED")))
    for readers in (1, 2):
        runs = {c: [] for c in contenders}
        for _ in range(repeats):                  # interleaved: noise hits all alike
            for c in contenders:
                runs[c].append(_subprocess_row(c, readers, seconds))
        for c in contenders:
            rows = runs[c]
            row = {"contender": c, "readers": readers, "repeats": len(rows),
                   "reads_per_s": statistics.median(r["reads_per_s"] for r in rows),
                   "reads_per_s_min": min(r["reads_per_s"] for r in rows),
                   "reads_per_s_max": max(r["reads_per_s"] for r in rows),
                   "writes_per_s": statistics.median(r["writes_per_s"] for r in rows),
                   "worst_batch_ms": max(r["worst_batch_ms"] for r in rows),
                   "worst_batch_ms_median": statistics.median(r["worst_batch_ms"] for r in rows),
                   "gil_enabled": any(r["gil_enabled"] for r in rows)}
            res.add(**row)
            progress(f"[freethreaded] {readers} reader(s) {c:>15}: "
                     f"{row['reads_per_s'] / 1e6:6.2f} M reads/s, "
                     f"{row['writes_per_s'] / 1e6:5.2f} M writes/s, slowest 1000 reads "
                     f"{row['worst_batch_ms']:7.2f} ms, GIL {'on' if row['gil_enabled'] else 'off'}")
    path = res.write(args.out)
    print("| readers | contender | reads/s (median) | writes/s | slowest 1,000 reads | GIL |")
    print("|---|---|---|---|---|---|")
    for r in res.rows:
        print(f"| {r['readers']} | {r['contender']} | {r['reads_per_s'] / 1e6:.2f} M | "
              f"{r['writes_per_s'] / 1e6:.2f} M | {r['worst_batch_ms']:.2f} ms | "
              f"{'on' if r['gil_enabled'] else 'off'} |")
    progress(f"[freethreaded] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
