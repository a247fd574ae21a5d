"""SnapshotMap writes against dict (issue 15 item 3), and against immutables.Map.set.

    python -m benchmarks.bench_snapshot_writes [--quick] [--sizes 1000,100000] [--label L]

Whole operations over n keys (int and str), no snapshot held unless the row says so:

* build: ``m[k] = v`` for n new keys into an empty map
* delete: ``del m[k]`` for every key, in random order, of a full map
* clear-and-refill: ``m.clear()`` then ``m[k] = v`` for n keys
* constructor from pairs: ``SnapshotMap(list_of_pairs)``
* constructor from a dict: ``SnapshotMap(a_dict)``
* update(a_dict) into an empty map / into a map holding the other half of the keys
* write + snapshot: ``m[k] = v; m.snapshot()`` for n keys of a full map (every write keeps
  the previous version alive until the next snapshot replaces it), against
  ``im = im.set(k, v)`` (each ``immutables.Map`` is its own snapshot)

Candidate and reference are timed interleaved, each round setting up fresh inputs outside
the timed region; the ratio is candidate minimum / reference minimum (the machine is
shared: the minimum is the least disturbed run).  Writes snapshot_writes[_LABEL].json.
"""
from __future__ import annotations

import argparse
import gc
import os
import random
import sys
from time import perf_counter

from benchmarks.harness import Results, int_keys, progress, str_keys
from fastmaps import SnapshotMap

try:
    import immutables
except ImportError:  # measured only when installed
    immutables = None

HERE = os.path.dirname(os.path.abspath(__file__))


def _time(setup, fn):
    arg = setup()
    t0 = perf_counter()
    fn(arg)
    return perf_counter() - t0


def _pair(ref, cand, rounds):
    """(ref_setup, ref_fn), (cand_setup, cand_fn): minima over interleaved rounds."""
    rs, cs = [], []
    gc_was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            rs.append(_time(*ref))
            cs.append(_time(*cand))
    finally:
        if gc_was:
            gc.enable()
    return min(rs), min(cs)


def ops_for(keys):
    n = len(keys)
    shuffled = keys[:]
    random.Random(7).shuffle(shuffled)
    pairs = [(k, 1) for k in keys]
    src = dict(pairs)
    half_a = dict(pairs[: n // 2])
    half_b = dict(pairs[n // 2:])

    def build(cls):
        def fn(m):
            for k in keys:
                m[k] = 1
        return (cls, fn)

    def delete(cls):
        def fn(m):
            for k in shuffled:
                del m[k]
        return (lambda: cls(src), fn)

    def refill(cls):
        def setup():
            m = cls(src)
            m[keys[0]] = 2
            return m

        def fn(m):
            m.clear()
            for k in keys:
                m[k] = 1
        return (setup, fn)

    def ctor_pairs(cls):
        return (lambda: None, lambda _: cls(pairs))

    def ctor_dict(cls):
        return (lambda: None, lambda _: cls(src))

    def update_empty(cls):
        return (cls, lambda m: m.update(src))

    def update_half(cls):
        return (lambda: cls(half_a), lambda m: m.update(half_b))

    return [
        ("build m[k]=v", build, 1.5),
        ("delete del m[k]", delete, 1.5),
        ("clear + refill", refill, 1.5),
        ("SnapshotMap(pairs)", ctor_pairs, 1.5),
        ("SnapshotMap(a_dict)", ctor_dict, 1.5),
        ("empty.update(a_dict)", update_empty, 2.0),
        ("half.update(other_half)", update_half, 1.5),
    ]


def bench(res, n, kind, keys, rounds):
    for op, make, target in ops_for(keys):
        rt, ct = _pair(make(dict), make(SnapshotMap), rounds)
        ratio = ct / rt
        res.add(n=n, keys=kind, op=op, reference="dict", ref_ns=rt / n * 1e9,
                cand_ns=ct / n * 1e9, ratio=ratio, target=target, met=bool(ratio <= target))
        progress(f"  n={n:<8} {kind:3} {op:26} {ratio:6.2f}x ({ct/n*1e9:7.1f} vs "
                 f"{rt/n*1e9:7.1f} ns/item)")
    if immutables is None:
        return
    vals = (object(), object())

    def m_setup():
        return SnapshotMap(dict.fromkeys(keys, vals[0]))

    def m_fn(m):
        v = vals[1]
        for k in keys:
            m[k] = v
            m.snapshot()

    def im_setup():
        return immutables.Map(dict.fromkeys(keys, vals[0]))

    def im_fn(im):
        v = vals[1]
        for k in keys:
            im = im.set(k, v)

    rt, ct = _pair((im_setup, im_fn), (m_setup, m_fn), rounds)
    ratio = ct / rt
    res.add(n=n, keys=kind, op="m[k]=v; m.snapshot()", reference="immutables.Map.set",
            ref_ns=rt / n * 1e9, cand_ns=ct / n * 1e9, ratio=ratio, target=None, met=None)
    progress(f"  n={n:<8} {kind:3} {'write+snapshot':26} {ratio:6.2f}x ({ct/n*1e9:7.1f} vs "
             f"immutables {rt/n*1e9:7.1f} ns/item)")


def print_table(res: Results) -> None:
    print()
    print(f"{'n':>8} {'keys':4} {'operation':26} {'vs':20} {'ratio':>7} {'target':>7}  met")
    for r in res.rows:
        target = "" if r["target"] is None else f"{r['target']:.2f}"
        met = "" if r["met"] is None else ("yes" if r["met"] else "NO")
        print(f"{r['n']:>8} {r['keys']:4} {r['op']:26} {r['reference']:20} "
              f"{r['ratio']:7.2f} {target:>7}  {met}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="sizes 1e3 and 1e5 only")
    ap.add_argument("--sizes", default=None, help="comma-separated sizes")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--label", default="")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    if args.sizes:
        sizes = [int(x) for x in args.sizes.split(",")]
    else:
        sizes = [1000, 100_000] if args.quick else [1000, 100_000, 1_000_000]
    name = "snapshot_writes" + (f"_{args.label}" if args.label else "")
    res = Results(name)
    res.extra["immutables"] = getattr(immutables, "__version__", None)
    res.extra["label"] = args.label
    for n in sizes:
        rounds = args.rounds or (200 if n <= 1000 else 7 if n <= 100_000 else 3)
        for kind, keys in (("int", int_keys(n)), ("str", str_keys(n))):
            progress(f"n={n} {kind}")
            bench(res, n, kind, keys, rounds)
    print_table(res)
    path = res.write(args.out)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
