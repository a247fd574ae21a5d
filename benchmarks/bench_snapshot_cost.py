"""Snapshot cost against map size: SnapshotMap.snapshot() vs copying a dict.

    python -m benchmarks.bench_snapshot_cost [--quick] [--out benchmarks/results]

A consistent point-in-time copy of a shared ``dict`` costs ``dict.copy()`` (O(n)), taken
under the ``threading.Lock`` that guards the dict when other threads write to it;
``SnapshotMap.snapshot()`` publishes nothing and copies nothing (O(1)). ``immutables.Map``
needs no snapshot call at all (the map value is its own snapshot; its cost moves to every
write, measured in bench_snapshot.py), so it has no row here.

Sizes are powers of ten; the three are measured interleaved in each round (harness
``compare_many``), each callable repeating its operation enough times to be timed, and
reported per call. Writes snapshot_cost.json into --out.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading

from fastmaps import SnapshotMap

from .harness import Results, compare_many, int_keys, powers_of_ten, progress


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="sizes up to 1e5, fewer repeats")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args(argv)
    sizes = powers_of_ten(1, 5 if args.quick else 6)
    repeats = 3 if args.quick else 7
    res = Results("snapshot_cost")
    res.extra.update(quick=args.quick, sizes=sizes, repeats=repeats)
    for n in sizes:
        keys = int_keys(n)
        d = dict.fromkeys(keys, 1)
        m = SnapshotMap(d)
        lock = threading.Lock()
        k_copy = max(5, 200_000 // n)       # copies per timed call
        k_snap = 20_000                     # snapshots per timed call

        def copy():
            for _ in range(k_copy):
                d.copy()

        def locked_copy():
            for _ in range(k_copy):
                with lock:
                    d.copy()

        def snap():
            for _ in range(k_snap):
                m.snapshot()

        rt, cands = compare_many(copy, {"locked": locked_copy, "snapshot": snap}, ops=1,
                                 repeats=repeats)
        copy_ns = rt.median / k_copy * 1e9
        locked_ns = cands["locked"][0].median / k_copy * 1e9
        snap_ns = cands["snapshot"][0].median / k_snap * 1e9
        res.add(n=n, dict_copy_ns=copy_ns, dict_copy_min_ns=rt.min / k_copy * 1e9,
                dict_copy_max_ns=rt.max / k_copy * 1e9, locked_copy_ns=locked_ns,
                snapshot_ns=snap_ns,
                snapshot_min_ns=cands["snapshot"][0].min / k_snap * 1e9,
                snapshot_max_ns=cands["snapshot"][0].max / k_snap * 1e9,
                ratio_snapshot_vs_copy=snap_ns / copy_ns)
        progress(f"[snapshot cost] n={n:>9,}: snapshot() {snap_ns:8.1f} ns, dict.copy() "
                 f"{copy_ns:12.1f} ns, under a Lock {locked_ns:12.1f} ns")
    path = res.write(args.out)
    print("| n | SnapshotMap.snapshot() | dict.copy() | dict.copy() under a Lock |")
    print("|---|---|---|---|")
    for r in res.rows:
        print(f"| {r['n']:,} | {r['snapshot_ns']:.0f} ns | {r['dict_copy_ns']/1e3:.1f} µs | "
              f"{r['locked_copy_ns']/1e3:.1f} µs |")
    progress(f"[snapshot cost] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
