"""ObjectPool get+put pairs per second with 1 and 2 threads, each on its own objects.

    python -m benchmarks.bench_pool_threads [--quick] [--out benchmarks/results]
    python -m benchmarks.bench_pool_threads --threads 2 --seconds 1 --repeats 7

Each thread loops ``x = pool.get(); pool.put(x)`` on one shared pool (default options:
per-thread cache slots, no callbacks, no bounds), so in the steady state every thread
works only with the objects in its own cache slot. Reported: the pairs per second summed
over the threads, counted in batches of 1,000 over a fixed window. The question is
whether the fast path scales: on a free-threaded build (3.13t, GIL off) two threads on
two cores should do about twice the pairs of one. On a GIL build the threads take turns,
so the 2-thread row only shows the GIL's serialisation; the 1-thread row is the
single-thread speed.

Every configuration runs in its own subprocess, repeated and interleaved (1 thread,
2 threads, 1 thread, ...) so that noise from other work on the machine hits both alike;
the median, minimum and maximum of the repeats are reported. The machine's CPU count is
recorded: with 2 CPUs shared with other work, the 2-thread rows also measure
oversubscription. Writes pool_threads.json into --out.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import threading
import time

BATCH = 1_000


def run_one(threads: int, seconds: float) -> dict:
    """One configuration, in this process: returns the measured row. Besides wall-clock
    throughput it records each thread's CPU time (time.thread_time()): pairs per
    CPU-second is the cost of a pair, which threads that contend for shared cache lines
    or a lock raise, and which other load on the machine does not change (it only takes
    CPU time away: see cpu_share, the fraction of the window the threads got)."""
    from fastmaps import ObjectPool
    pool = ObjectPool(object)
    start = threading.Barrier(threads + 1)
    stop = threading.Event()
    pairs = [0] * threads
    cpu = [0.0] * threads

    def work(j):
        get, put = pool.get, pool.put
        put(get())  # warm this thread's slot
        start.wait()
        c0 = time.thread_time()
        n = 0
        r = range(BATCH)
        while not stop.is_set():
            for _ in r:
                x = get()
                put(x)
            n += BATCH
        cpu[j] = time.thread_time() - c0
        pairs[j] = n

    ts = [threading.Thread(target=work, args=(j,)) for j in range(threads)]
    for t in ts:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - t0
    s = pool.stats()
    if s["in_use"] != 0 or s["gets"] != s["puts"]:
        raise AssertionError(f"inconsistent pool after the run: {s}")
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    return {"threads": threads, "seconds": elapsed, "pairs_per_s": sum(pairs) / elapsed,
            "per_thread": [p / elapsed for p in pairs], "gil_enabled": gil,
            "pairs_per_cpu_s": sum(pairs) / max(sum(cpu), 1e-9),
            "cpu_share": sum(cpu) / (elapsed * threads),
            "created": s["created"]}


def _subprocess_row(threads: int, seconds: float) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_pool_threads", "--one",
         "--threads", str(threads), "--seconds", str(seconds)],
        capture_output=True, text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if out.returncode != 0:
        raise RuntimeError(f"{threads} thread(s) failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter windows, fewer repeats")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=0,
                    help="only this thread count (default: 1 and 2)")
    ap.add_argument("--seconds", type=float, default=None, help="window per run")
    ap.add_argument("--repeats", type=int, default=None, help="runs per configuration")
    ap.add_argument("--no-write", action="store_true", help="print only, write no JSON")
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.threads or 1, args.seconds or 1.0)))
        return 0

    from .harness import Results, progress
    seconds = args.seconds or (0.5 if args.quick else 1.0)
    repeats = args.repeats or (3 if args.quick else 7)
    counts = [args.threads] if args.threads else [1, 2]
    ft_build = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    if not ft_build:
        progress("[pool_threads] GIL build: the threads take turns; only the 1-thread "
                 "row measures the pool")
    runs = {c: [] for c in counts}
    for _ in range(repeats):                      # interleaved: noise hits all alike
        for c in counts:
            runs[c].append(_subprocess_row(c, seconds))
    res = Results("pool_threads")
    res.extra.update(quick=args.quick, seconds=seconds, repeats=repeats, batch=BATCH,
                     gil_disabled_build=ft_build)
    for c in counts:
        vals = [r["pairs_per_s"] for r in runs[c]]
        cvals = [r["pairs_per_cpu_s"] for r in runs[c]]
        row = {"threads": c, "repeats": len(vals),
               "pairs_per_s": statistics.median(vals), "pairs_per_s_min": min(vals),
               "pairs_per_s_max": max(vals), "all": vals,
               "pairs_per_cpu_s": statistics.median(cvals),
               "pairs_per_cpu_s_min": min(cvals), "pairs_per_cpu_s_max": max(cvals),
               "cpu_share": statistics.median(r["cpu_share"] for r in runs[c]),
               "gil_enabled": any(r["gil_enabled"] for r in runs[c])}
        res.add(**row)
        progress(f"[pool_threads] {c} thread(s): median {row['pairs_per_s'] / 1e6:5.2f} M "
                 f"pairs/s (min {row['pairs_per_s_min'] / 1e6:5.2f}, max "
                 f"{row['pairs_per_s_max'] / 1e6:5.2f}); per CPU-second "
                 f"{row['pairs_per_cpu_s'] / 1e6:5.2f} M (min "
                 f"{row['pairs_per_cpu_s_min'] / 1e6:5.2f}), CPU share "
                 f"{row['cpu_share']:.2f}, GIL "
                 f"{'on' if row['gil_enabled'] else 'off'}")
    if not args.no_write:
        progress(f"[pool_threads] wrote {res.write(args.out)}")
    print("| threads | pairs/s (median) | min | max | pairs per CPU-s (median) | min | "
          "CPU share | GIL |")
    print("|---|---|---|---|---|---|---|---|")
    for r in res.rows:
        print(f"| {r['threads']} | {r['pairs_per_s'] / 1e6:.2f} M | "
              f"{r['pairs_per_s_min'] / 1e6:.2f} M | {r['pairs_per_s_max'] / 1e6:.2f} M | "
              f"{r['pairs_per_cpu_s'] / 1e6:.2f} M | {r['pairs_per_cpu_s_min'] / 1e6:.2f} M | "
              f"{r['cpu_share']:.2f} | {'on' if r['gil_enabled'] else 'off'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
