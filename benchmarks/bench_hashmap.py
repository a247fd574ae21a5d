"""HashMap vs dict, measured in one process: pauses while growing, common operations,
building, clear-and-refill, memory per entry.

    python -m benchmarks.bench_hashmap [--quick] [--out benchmarks/results]

Writes hashmap.json (all figures), hashmap.md (the table of ratios) and
hashmap_latency.png (per-insert latency against map size) into --out.
"""
import argparse
import gc
import os
import sys
import tracemalloc
from array import array

from fastmaps import HashMap

from .harness import (Results, compare, geomean, int_keys, miss_keys, percentile,
                      perf_counter_ns, progress, str_keys, timer_overhead_ns)


def latency_trace(cls, keys):
    """Per-insert latency (ns, timer overhead subtracted) while growing from empty."""
    out = array("q", bytes(8 * len(keys)))
    t = perf_counter_ns
    m = cls()
    gc.collect()
    gc.disable()
    try:
        i = 0
        for k in keys:
            t0 = t()
            m[k] = None
            out[i] = t() - t0
            i += 1
    finally:
        gc.enable()
    del m
    return out


def summarize(trace, overhead):
    s = sorted(max(0.0, x - overhead) for x in trace)
    return {"worst_ns": s[-1], "p99_ns": percentile(s, 0.99), "p999_ns": percentile(s, 0.999),
            "p9999_ns": percentile(s, 0.9999), "median_ns": percentile(s, 0.5)}


def op_benchmarks(n, kind, repeats):
    keys = int_keys(n) if kind == "int" else str_keys(n)
    miss = miss_keys(keys)
    d = dict.fromkeys(keys, 1)
    m = HashMap.fromkeys(keys, 1)
    reps = max(1, 1_000_000 // n)

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
        rt, ct, ratio = compare(mk(d), mk(m), ops=n * reps, repeats=repeats)
        rows[name] = (rt.median, ct.median, ratio)
    rt, ct, ratio = compare(build(dict), build(HashMap), ops=n * reps, repeats=repeats)
    rows["build from empty"] = (rt.median, ct.median, ratio)
    rt, ct, ratio = compare(build(dict), build(lambda: HashMap.with_capacity(n)),
                            ops=n * reps, repeats=repeats)
    rows["build with_capacity(n)"] = (rt.median, ct.median, ratio)
    rt, ct, ratio = compare(refill(dict(), False), refill(HashMap(), True),
                            ops=n * reps, repeats=repeats)
    rows["clear+refill (keep_capacity)"] = (rt.median, ct.median, ratio)
    return rows


def bytes_per_entry(cls, keys):
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        c = cls()
        for k in keys:
            c[k] = None
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del c
    return (after - before) / len(keys)


def plot(traces, n, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    bucket = 2048
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for label, trace, color in traces:
        xs, ys = [], []
        for start in range(0, len(trace), bucket):
            xs.append(start + bucket)
            ys.append(max(trace[start:start + bucket]) / 1e6)
        ax.plot(xs, ys, label=label, color=color, linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("map size (keys)")
    ax.set_ylabel(f"worst insert in each run of {bucket} (ms, log)")
    ax.set_title(f"Per-insert latency while growing to {n:,} int keys")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args(argv)
    res = Results("hashmap")
    sizes = (1_000, 100_000) if args.quick else (1_000, 100_000, 1_000_000)
    repeats = 3 if args.quick else 5
    grow_to = 1_000_000 if args.quick else 4_000_000

    progress(f"[hashmap] latency trace: growing dict and HashMap to {grow_to:,} int keys")
    overhead = timer_overhead_ns()
    keys = list(range(grow_to))
    td = latency_trace(dict, keys)
    th = latency_trace(HashMap, keys)
    sd, sh = summarize(td, overhead), summarize(th, overhead)
    res.extra["latency"] = {"keys": grow_to, "timer_overhead_ns": overhead,
                            "dict": sd, "HashMap": sh,
                            "worst_ratio": sh["worst_ns"] / sd["worst_ns"]}
    if not args.quick:
        try:
            plot([("dict", td, "tab:red"), ("fastmaps.HashMap", th, "tab:blue")], grow_to,
                 os.path.join(args.out, "hashmap_latency.png"))
        except ImportError:
            progress("  matplotlib not installed: no plot (pip install '.[bench]')")
    del td, th

    for kind in ("int", "str"):
        for n in sizes:
            progress(f"[hashmap] operations, {kind} keys, n={n:,}")
            for op, (ref, cand, ratio) in op_benchmarks(n, kind, repeats).items():
                res.add(kind=kind, n=n, op=op, dict_s=ref, hashmap_s=cand, ratio=ratio)

    progress("[hashmap] memory per entry at 1e6 (tracemalloc)")
    mem = {}
    for kind in ("int", "str"):
        ks = int_keys(1_000_000) if kind == "int" else str_keys(1_000_000)
        mem[kind] = {"dict": bytes_per_entry(dict, ks), "HashMap": bytes_per_entry(HashMap, ks)}
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


def render(res):
    lat = res.extra["latency"]
    lines = [f"# HashMap vs dict ({res.machine['python']}, {res.machine.get('cpu_model', '?')})",
             "", f"Growing to {lat['keys']:,} int keys, per-insert latency (timer overhead "
             f"{lat['timer_overhead_ns']:.0f} ns subtracted):", "",
             "| | worst | p99.99 | p99.9 | p99 | median |", "|---|---|---|---|---|---|"]
    for name in ("dict", "HashMap"):
        s = lat[name]
        lines.append(f"| {name} | {s['worst_ns']/1e6:.3f} ms | {s['p9999_ns']/1e3:.1f} µs | "
                     f"{s['p999_ns']/1e3:.2f} µs | {s['p99_ns']:.0f} ns | {s['median_ns']:.0f} ns |")
    lines += ["", f"Worst HashMap insert / worst dict insert: **{lat['worst_ratio']:.4f}**", "",
              "Time ratios HashMap / dict (median of repeats; below 1 = HashMap faster):", "",
              "| operation | keys | " + " | ".join(f"n={n:,}" for n in sorted({r['n'] for r in res.rows})) + " |",
              "|---|---|" + "---|" * len({r['n'] for r in res.rows})]
    ops = []
    for r in res.rows:
        if (r["op"], r["kind"]) not in ops:
            ops.append((r["op"], r["kind"]))
    for op, kind in ops:
        cells = [f"{r['ratio']:.2f}" for r in res.rows if r["op"] == op and r["kind"] == kind]
        lines.append(f"| {op} | {kind} | " + " | ".join(cells) + " |")
    lines += ["", f"Read operations (hit, miss, in, update, iterate): geometric mean "
              f"**{res.extra['read_ops_geomean']:.3f}**, max {res.extra['read_ops_max']:.2f}", ""]
    mem = res.extra.get("bytes_per_entry_1e6")
    if mem:
        lines += ["Memory per entry at 1e6 entries (tracemalloc, container only):", "",
                  "| keys | dict | HashMap |", "|---|---|---|"]
        for kind, v in mem.items():
            lines.append(f"| {kind} | {v['dict']:.1f} B | {v['HashMap']:.1f} B |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
