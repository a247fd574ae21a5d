"""Run every fastmaps benchmark through the shared harness: ``python -m benchmarks``.

    python -m benchmarks --quick     # a few minutes: smaller sizes, fewer repeats
    python -m benchmarks --full      # the committed results (about 10-15 minutes)
    python -m benchmarks --quick --only hashmap,pool --out /tmp/results

Progress goes to stderr, tables to stdout. Each suite writes its JSON into --out
(default benchmarks/results/); then run.json (machine, Python and package versions, mode,
time per suite), summary.md (all tables) and, when matplotlib is installed, the PNGs
(benchmarks/plot.py) are written. Peers that are not installed are skipped with a message.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import sysconfig
import time

from . import harness, report

SUITES = {
    "hashmap": "benchmarks.bench_hashmap",
    "latency": "benchmarks.bench_latency",
    "snapshot": "benchmarks.bench_snapshot",
    "snapshot_cost": "benchmarks.bench_snapshot_cost",
    "pool": "benchmarks.bench_pool",
    "pool_threads": "benchmarks.bench_pool_threads",
    "freethreaded": "benchmarks.bench_freethreaded",
}
# Suites that only mean something with the GIL off: skipped, with a message, on GIL builds.
FREE_THREADED_ONLY = {"freethreaded"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a few minutes (the default)")
    mode.add_argument("--full", action="store_true", help="larger sizes, more repeats")
    ap.add_argument("--only", default=",".join(SUITES),
                    help=f"comma-separated suites to run (default: all of {','.join(SUITES)})")
    ap.add_argument("--out", default=report.RESULTS, help="results directory")
    ap.add_argument("--no-plot", action="store_true", help="do not draw the PNGs")
    args = ap.parse_args(argv)
    quick = not args.full
    names = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in names if s not in SUITES]
    if unknown:
        ap.error(f"unknown suite(s) {unknown}; choose from {list(SUITES)}")
    os.makedirs(args.out, exist_ok=True)

    machine = harness.machine_info()
    harness.progress(f"fastmaps {machine['fastmaps']} on Python {machine['python']} "
                     f"({machine.get('cpu_model', '?')}, {machine['cpus']} CPUs); "
                     f"{'quick' if quick else 'full'} run of {', '.join(names)}")
    for peer, ver in machine["packages"].items():
        harness.progress(f"  {peer}: {ver or 'not installed'}")
    durations = {}
    t_all = time.perf_counter()
    ft_build = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    for i, name in enumerate(names, 1):
        harness.progress(f"\n=== [{i}/{len(names)}] {name} ===")
        if name in FREE_THREADED_ONLY and not ft_build:
            harness.progress(f"{name} skipped: it measures threads running at once, and "
                             f"this is a GIL build (run it on a free-threaded CPython, "
                             f"e.g. 3.13t)")
            continue
        t0 = time.perf_counter()
        mod = importlib.import_module(SUITES[name])
        rc = mod.main((["--quick"] if quick else []) + ["--out", args.out])
        durations[name] = time.perf_counter() - t0
        harness.progress(f"=== {name} done in {durations[name]:.0f} s")
        if rc:
            harness.progress(f"{name} failed with exit status {rc}")
            return rc

    run = {"mode": "quick" if quick else "full",
           "command": "python -m benchmarks " + ("--quick" if quick else "--full"),
           "machine": machine, "suites": durations,
           "total_s": time.perf_counter() - t_all}
    with open(os.path.join(args.out, "run.json"), "w") as f:
        json.dump(run, f, indent=1, sort_keys=True)
        f.write("\n")
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(report.render_all(args.out))
    harness.progress(f"\nwrote {os.path.join(args.out, 'summary.md')} and run.json")
    if not args.no_plot:
        from . import plot
        plot.main(["--results", args.out])
    harness.progress(f"all done in {time.perf_counter() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
