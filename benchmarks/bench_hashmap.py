"""HashMap vs dict and cykhash, measured in one process: pauses while growing, common
operations, building, clear-and-refill, memory per entry.

    python -m benchmarks.bench_hashmap [--quick] [--out benchmarks/results]

(``python -m benchmarks`` runs this together with the other structures.) Writes
hashmap.json (all figures, including the per-insert latency trace reduced to the worst insert
of each bucket) and hashmap.md (the tables) into --out; ``python -m benchmarks.plot`` draws
the PNGs from the JSON.

Peers: ``dict`` is the reference every ratio is divided by. cykhash's ``PyObjectMap`` (any
hashable keys) and ``Int64toInt64Map`` (int64 keys and values, int keys only) are measured in
the same interleaved rounds when cykhash is installed, and skipped otherwise.

Lookup misses use ``harness.absent_keys`` (for ints, random absent ints from the keys' own
range). Results committed before 2026-11-21 used ``harness.miss_keys`` (``k + 2**41``),
which share their low bits, so their first probe slot, with a present key: every miss
walked a present key's probe chain (a collision pattern, not a typical miss).
"""
import argparse
import gc
import os
import sys
import tracemalloc

from fastmaps import HashMap
from fastmaps.__main__ import latency_trace_min

from .harness import (Results, absent_keys, compare_many, geomean, int_keys, optional_peer,
                      percentile, powers_of_ten, progress, str_keys,
                      timer_overhead_ns)

TRACE_BUCKETS = 500       # the stored trace keeps the worst insert of each of this many runs


def peers(kind):
    """{name: (factory, presized factory or None, value)} for the structures compared with
    dict; cykhash ones only when installed (and the int64 map only for int keys)."""
    out = {"HashMap": (HashMap, HashMap.with_capacity, None)}
    cykhash = optional_peer("cykhash")
    if cykhash is not None:
        out["cykhash.PyObjectMap"] = (
            cykhash.PyObjectMap,
            lambda n: cykhash.PyObjectMap(number_of_elements_hint=n), None)
        if kind == "int":
            out["cykhash.Int64toInt64Map"] = (
                cykhash.Int64toInt64Map,
                lambda n: cykhash.Int64toInt64Map(number_of_elements_hint=n), 0)
    return out


def summarize(trace, overhead):
    s = sorted(max(0.0, x - overhead) for x in trace)
    return {"worst_ns": s[-1], "p99_ns": percentile(s, 0.99), "p999_ns": percentile(s, 0.999),
            "p9999_ns": percentile(s, 0.9999), "median_ns": percentile(s, 0.5)}


def bucket_max(trace, bucket, overhead):
    """The worst insert (ns, overhead subtracted) of each run of ``bucket`` inserts."""
    return [max(0, max(trace[i:i + bucket]) - overhead) for i in range(0, len(trace), bucket)]


def op_benchmarks(n, kind, repeats, target_ops):
    keys = int_keys(n) if kind == "int" else str_keys(n)
    miss = absent_keys(keys)     # typical absent keys (ints: the keys' own range)
    cands = peers(kind)
    filled = {name: f() for name, (f, _, _) in cands.items()}
    for name, (_, _, v) in cands.items():
        c = filled[name]
        for k in keys:
            c[k] = 1
    d = dict.fromkeys(keys, 1)
    reps = max(1, target_ops // n)

    def hit(c):
        def f():
            for _ in range(reps):
                for k in keys:
                    c[k]
        return f

    def miss_get(c):
        def f():
            for _ in range(reps):
                for k in miss:
                    c.get(k)
        return f

    def contains(c):
        def f():
            for _ in range(reps):
                for k in keys:
                    k in c
        return f

    def update(c):
        def f():
            for _ in range(reps):
                for k in keys:
                    c[k] = 2
        return f

    def iterate(c):
        def f():
            for _ in range(reps):
                for k in c:
                    pass
        return f

    def build(factory):
        def f():
            for _ in range(reps):
                c = factory()
                for k in keys:
                    c[k] = 1
        return f

    def refill(c, keep):
        def f():
            for _ in range(reps):
                if keep:
                    c.clear(keep_capacity=True)
                else:
                    c.clear()
                for k in keys:
                    c[k] = 1
        return f

    rows = {}
    for name, mk in (("lookup hit", hit), ("lookup miss (get)", miss_get), ("in", contains),
                     ("update existing", update), ("iterate", iterate)):
        rows[name] = compare_many(mk(d), {p: mk(c) for p, c in filled.items()},
                                  ops=n * reps, repeats=repeats)
    rows["build from empty"] = compare_many(
        build(dict), {p: build(f) for p, (f, _, _) in cands.items()},
        ops=n * reps, repeats=repeats)
    rows["build presized (with_capacity(n))"] = compare_many(
        build(dict), {p: build(lambda pf=pf: pf(n)) for p, (_, pf, _) in cands.items()},
        ops=n * reps, repeats=repeats)
    rows["clear+refill (keep_capacity)"] = compare_many(
        refill(dict(), False),
        {p: refill(f(), p == "HashMap") for p, (f, _, _) in cands.items()},
        ops=n * reps, repeats=repeats)
    return rows


def bulk_benchmarks(n, kind, repeats, target_ops):
    """Whole-map operations a dict user runs all day: {row name: (dict Timing, HashMap
    Timing, ratio)}, each HashMap call interleaved with the same call on dict."""
    keys = int_keys(n) if kind == "int" else str_keys(n)
    half = (int_keys(n, seed=9) if kind == "int" else str_keys(n, seed=9))[: n // 2]
    d = dict.fromkeys(keys, 1)
    m = HashMap(d)
    pairs = list(d.items())
    d_other = dict.fromkeys(keys[: n // 2] + half, 2)     # half present, half new
    m_other = HashMap(d_other)
    reps = max(1, target_ops // n)
    d_copy, m_copy = dict(d), HashMap(d)
    d_rev, m_rev = dict(pairs[::-1]), HashMap(pairs[::-1])     # equal, other order

    def loop(fn):
        def f():
            for _ in range(reps):
                fn()
        return f

    def it_items(c):
        for k, v in c.items():
            pass

    def it_keys(c):
        for k in c.keys():
            pass

    def it_values(c):
        for v in c.values():
            pass

    def it_rev(c):
        for k in reversed(c):
            pass

    def upd_nonempty(cls, src):
        # a fresh copy of the n-key map each time, then the update: both sides pay the copy
        def f():
            c = cls(d) if cls is dict else m.copy()
            c.update(src)
        return f

    cases = {
        "copy()": (lambda: d.copy(), lambda: m.copy()),
        "cls(pairs)": (lambda: dict(pairs), lambda: HashMap(pairs)),
        "cls(a dict)": (lambda: dict(d), lambda: HashMap(d)),
        "cls(same type)": (lambda: dict(d), lambda: HashMap(m)),
        "fromkeys(list)": (lambda: dict.fromkeys(keys, 1), lambda: HashMap.fromkeys(keys, 1)),
        "empty.update(a dict)": (lambda: {}.update(d), lambda: HashMap().update(d)),
        "empty.update(same type)": (lambda: {}.update(d), lambda: HashMap().update(m)),
        "empty.update(pairs)": (lambda: {}.update(pairs), lambda: HashMap().update(pairs)),
        "copy + update(a dict, half new)": (upd_nonempty(dict, d_other),
                                            upd_nonempty(HashMap, d_other)),
        "copy + update(same type, half new)": (upd_nonempty(dict, d_other),
                                               upd_nonempty(HashMap, m_other)),
        "copy + update(pairs, half new)": (upd_nonempty(dict, list(d_other.items())),
                                           upd_nonempty(HashMap, list(d_other.items()))),
        "a | b (half new)": (lambda: d | d_other, lambda: m | m_other),
        "a |= b (all present)": (lambda: d_copy.__ior__(d), lambda: m_copy.__ior__(m)),
        "a == b (equal copies)": (lambda: d == d_copy, lambda: m == m_copy),
        "a == b (same items, other order)": (lambda: d == d_rev, lambda: m == m_rev),
        "for k, v in items()": (lambda: it_items(d), lambda: it_items(m)),
        "for k in keys()": (lambda: it_keys(d), lambda: it_keys(m)),
        "for v in values()": (lambda: it_values(d), lambda: it_values(m)),
        "for k in reversed()": (lambda: it_rev(d), lambda: it_rev(m)),
    }
    rows = {}
    for name, (fd, fm) in cases.items():
        rt, cands = compare_many(loop(fd), {"HashMap": loop(fm)}, ops=reps, repeats=repeats)
        ht, _ = cands["HashMap"]
        # minima: the machine is shared, and the minimum is the least disturbed run
        rows[name] = (rt, ht, ht.min / rt.min)
    return rows


def bytes_per_entry(cls, keys, value=None):
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        c = cls()
        for k in keys:
            c[k] = value
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del c
    return (after - before) / len(keys)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args(argv)
    res = Results("hashmap")
    sizes = powers_of_ten(3, 5)[::2] if args.quick else powers_of_ten(3, 6)
    repeats = 3 if args.quick else 5
    target_ops = 300_000 if args.quick else 1_000_000
    grow_to = 1_000_000 if args.quick else 4_000_000
    res.extra.update(quick=args.quick, sizes=sizes, repeats=repeats, ops_per_call=target_ops)

    progress(f"[hashmap] latency trace: growing each map to {grow_to:,} int keys")
    overhead = timer_overhead_ns()
    keys = list(range(grow_to))
    bucket = max(1, grow_to // TRACE_BUCKETS)
    lat = {"keys": grow_to, "timer_overhead_ns": overhead, "bucket": bucket, "trace_max_ns": {}}
    runs = 2 if args.quick else 3
    lat["runs"] = runs
    for name, (factory, _, value) in [("dict", (dict, None, None))] + list(peers("int").items()):
        progress(f"  {name} ({runs} runs)")
        tr, raw_worst = latency_trace_min(factory, keys, value, runs)
        lat[name] = summarize(tr, overhead)
        lat[name]["raw_worst_ns"] = max(0, raw_worst - overhead)
        lat["trace_max_ns"][name] = bucket_max(tr, bucket, overhead)
        del tr
    lat["worst_ratio"] = lat["HashMap"]["worst_ns"] / lat["dict"]["worst_ns"]
    res.extra["latency"] = lat

    for kind in ("int", "str"):
        for n in sizes:
            progress(f"[hashmap] operations, {kind} keys, n={n:,}")
            for op, (rt, cands) in op_benchmarks(n, kind, repeats, target_ops).items():
                ht, ratio = cands["HashMap"]
                res.add(kind=kind, n=n, op=op, dict_s=rt.median, hashmap_s=ht.median,
                        ratio=ratio, dict_min_s=rt.min, dict_max_s=rt.max,
                        hashmap_min_s=ht.min, hashmap_max_s=ht.max,
                        peers={p: {"s": t.median, "min_s": t.min, "max_s": t.max, "ratio": r}
                               for p, (t, r) in cands.items() if p != "HashMap"})

    bulk_sizes = [1_000, 100_000] if args.quick else [1_000, 100_000, 1_000_000]
    for kind in ("int", "str"):
        for n in bulk_sizes:
            progress(f"[hashmap] bulk operations, {kind} keys, n={n:,}")
            for op, (rt, ht, ratio) in bulk_benchmarks(n, kind, repeats, target_ops).items():
                res.add(kind=kind, n=n, op=op, dict_s=rt.min, hashmap_s=ht.min, ratio=ratio,
                        dict_min_s=rt.min, dict_max_s=rt.max, hashmap_min_s=ht.min,
                        hashmap_max_s=ht.max, bulk=True)

    mem_n = 1_000_000
    progress(f"[hashmap] memory per entry at {mem_n:,} entries (tracemalloc)")
    mem = {}
    for kind in ("int", "str"):
        ks = int_keys(mem_n) if kind == "int" else str_keys(mem_n)
        mem[kind] = {"dict": bytes_per_entry(dict, ks)}
        for name, (factory, _, value) in peers(kind).items():
            mem[kind][name] = bytes_per_entry(factory, ks, value)
    res.extra["bytes_per_entry_1e6"] = mem

    read_ops = ("lookup hit", "lookup miss (get)", "in", "update existing", "iterate")
    ratios = [r["ratio"] for r in res.rows if r["op"] in read_ops]
    res.extra["read_ops_geomean"] = geomean(ratios)
    res.extra["read_ops_max"] = max(ratios)
    os.makedirs(args.out, exist_ok=True)
    path = res.write(args.out)
    table = render(res)
    with open(os.path.join(args.out, "hashmap.md"), "w") as f:
        f.write(table)
    print(table)
    progress(f"[hashmap] wrote {path}")
    return 0


ORDER = ("dict", "HashMap", "cykhash.PyObjectMap", "cykhash.Int64toInt64Map")


def _order(name):
    """Tables list dict, HashMap, then the peers (JSON files store keys sorted)."""
    return (ORDER.index(name) if name in ORDER else len(ORDER), name)


def render(res):
    lat = res.extra["latency"]
    names = sorted((k for k in lat if isinstance(lat[k], dict) and "worst_ns" in lat[k]),
                   key=_order)
    lines = [f"# HashMap vs dict and cykhash (Python {res.machine['python']}, "
             f"{res.machine.get('cpu_model', '?')})", "",
             f"Growing to {lat['keys']:,} int keys, per-insert latency (timer overhead "
             f"{lat['timer_overhead_ns']:.0f} ns subtracted; each position's minimum over "
             f"{lat.get('runs', 1)} runs, which drops random preemptions but keeps "
             f"deterministic pauses; 'raw worst' is the worst of any single run):", "",
             "| | worst | raw worst | p99.99 | p99.9 | p99 | median |",
             "|---|---|---|---|---|---|---|"]
    for name in names:
        s = lat[name]
        raw = s.get("raw_worst_ns", s["worst_ns"])
        lines.append(f"| {name} | {s['worst_ns']/1e6:.3f} ms | {raw/1e6:.3f} ms | "
                     f"{s['p9999_ns']/1e3:.1f} µs | "
                     f"{s['p999_ns']/1e3:.2f} µs | {s['p99_ns']:.0f} ns | {s['median_ns']:.0f} ns |")
    sizes = sorted({r["n"] for r in res.rows})
    lines += ["", f"Worst HashMap insert / worst dict insert: **{lat['worst_ratio']:.4f}**", "",
              "Time ratios against dict (median of the repeats, each structure measured "
              "interleaved with dict in the same run; below 1 = faster than dict; "
              "whole-map rows (copy, constructors, update, |, ==, iteration): ratio of "
              "the minima):", "",
              "| operation | keys | structure | " + " | ".join(f"n={n:,}" for n in sizes) + " |",
              "|---|---|---|" + "---|" * len(sizes)]
    ops = []
    for r in res.rows:
        if (r["op"], r["kind"]) not in ops:
            ops.append((r["op"], r["kind"]))
    for op, kind in ops:
        rows = [r for r in res.rows if r["op"] == op and r["kind"] == kind]
        structs = ["HashMap"] + sorted(rows[0].get("peers", {}), key=_order)
        for s in structs:
            cells = [f"{(r['ratio'] if s == 'HashMap' else r['peers'][s]['ratio']):.2f}"
                     for r in rows]
            label = f"**{s}**" if s == "HashMap" else s
            lines.append(f"| {op} | {kind} | {label} | " + " | ".join(cells) + " |")
    lines += ["", f"HashMap read operations (hit, miss, in, update, iterate): geometric mean "
              f"**{res.extra['read_ops_geomean']:.3f}**, max {res.extra['read_ops_max']:.2f}", ""]
    mem = res.extra.get("bytes_per_entry_1e6")
    if mem:
        cols = sorted(mem["int"], key=_order)
        lines += ["Memory per entry at 1e6 entries (tracemalloc, the container only; keys and "
                  "values are not counted):", "",
                  "| keys | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for kind, v in mem.items():
            lines.append(f"| {kind} | " + " | ".join(
                f"{v[c]:.1f} B" if c in v else "n/a" for c in cols) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
