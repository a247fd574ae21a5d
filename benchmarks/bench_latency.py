"""Latency over windows of consecutive operations: HashMap vs dict and cykhash.

    python -m benchmarks.bench_latency [--quick] [--out benchmarks/results]

(``python -m benchmarks`` runs it as the ``latency`` suite.) For each scenario every
operation is timed on its own (timer overhead subtracted), each position's minimum is taken
over ``runs`` identical runs (a resize costs the same at the same position every run, a
preemption lands at a random one, so the minimum keeps the first and drops the second), and
from that trace the **worst total time of w consecutive operations** is reported for
w = 1, 10, 100, 1000, 10000 (a minimum-mutator-utilisation style curve: w=1 is the worst
single pause, large w show a pause smeared over many operations). Beside it: the mean cost
of w operations over the whole scenario, so ``worst / mean`` says how uneven it is.

Scenarios (int keys from ``harness.int_keys``):

* ``grow 2M``, ``grow 4M``: inserting into an empty map up to 2,000,000 / 4,000,000 keys;
* ``delete 2M``: deleting every key of a 2,000,000-key map (random order) down to empty
  (tombstone compaction and shrinking);
* ``churn 1M``: a map of 1,000,000 keys, then 2,000,000 operations alternating an insert of
  a new key and a delete of the oldest key (steady state, 50/50).

Also recorded: minor page faults (``resource.getrusage``) of HashMap's inserts right after
the migration that starts at the last growth below 2M keys, per run of 50 inserts.
Writes latency.json and latency.md into --out; ``python -m benchmarks.plot`` draws
docs/img/latency_windows.png from the JSON.
"""
import argparse
import gc
import os
import sys
import time
from array import array

from fastmaps import HashMap

from .harness import Results, int_keys, optional_peer, progress, timer_overhead_ns

WINDOWS = (1, 10, 100, 1000, 10000)


def peers():
    """{name: factory}: dict, HashMap, and cykhash's PyObjectMap when installed."""
    out = {"dict": dict, "HashMap": HashMap}
    cykhash = optional_peer("cykhash")
    if cykhash is not None:
        out["cykhash.PyObjectMap"] = cykhash.PyObjectMap
    return out


def _trace(setup, ops):
    """Time every operation of ``ops`` (a list of (is_insert, key)) on the map returned by
    ``setup()``; ns per operation, timer overhead included."""
    m = setup()
    out = array("q", bytes(8 * len(ops)))
    t = time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        i = 0
        for ins, k in ops:
            if ins:
                t0 = t()
                m[k] = None
                out[i] = t() - t0
            else:
                t0 = t()
                del m[k]
                out[i] = t() - t0
            i += 1
    finally:
        gc.enable()
    del m
    gc.collect()
    return out


def trace_min(setup, ops, runs):
    """Per-position minimum over ``runs`` traces."""
    best = None
    for _ in range(runs):
        tr = _trace(setup, ops)
        best = tr if best is None else array("q", map(min, best, tr))
    return best


def worst_windows(trace, overhead, windows=WINDOWS):
    """{w: worst total ns of w consecutive operations} (overhead subtracted per op)."""
    ov = int(overhead)
    vals = array("q", (max(0, x - ov) for x in trace))
    prefix = array("q", [0]) * (len(vals) + 1)
    s = 0
    for i, x in enumerate(vals):
        s += x
        prefix[i + 1] = s
    out = {}
    for w in windows:
        if w > len(vals):
            continue
        out[w] = max(map(int.__sub__, prefix[w:], prefix[:len(prefix) - w]))
    return out, s


def scenarios(quick):
    """[(name, build(factory) -> setup, ops)]."""
    g2 = 500_000 if quick else 2_000_000
    g4 = 1_000_000 if quick else 4_000_000
    d2 = 500_000 if quick else 2_000_000
    c1 = 250_000 if quick else 1_000_000
    out = []
    keys = int_keys(g4)
    out.append((f"grow {g2 // 1000:,}k", lambda f: f, [(True, k) for k in keys[:g2]]))
    out.append((f"grow {g4 // 1000:,}k", lambda f: f, [(True, k) for k in keys]))
    dkeys = keys[:d2]

    def filled(keys_):
        def build(f):
            def setup():
                m = f()
                for k in keys_:
                    m[k] = None
                return m
            return setup
        return build

    order = list(dkeys)
    import random
    random.Random(7).shuffle(order)
    out.append((f"delete {d2 // 1000:,}k", filled(dkeys), [(False, k) for k in order]))
    ckeys = int_keys(c1 * 2, seed=11)
    base, fresh = ckeys[:c1], ckeys[c1:]
    ops = []
    for i in range(c1):
        ops.append((True, fresh[i]))
        ops.append((False, base[i]))          # the oldest key: FIFO churn
    out.append((f"churn {c1 // 1000:,}k", filled(base), ops))
    return out


def fault_profile(n, runs_of=50, count=600):
    """Minor page faults and time of HashMap's inserts right after the last migration that
    starts below n keys: [(faults, ns)] per run of ``runs_of`` inserts."""
    import resource
    keys = int_keys(n)
    ru, who, t = resource.getrusage, resource.RUSAGE_SELF, time.perf_counter_ns
    # where the last migration below n starts (a dry run), then time the inserts after it
    m = HashMap()
    last = 0
    migs = 0
    for i, k in enumerate(keys):
        m[k] = None
        p = m._progress()[2]
        if p != migs:
            migs = p
            last = i
    del m
    gc.collect()
    m = HashMap()
    gc.disable()
    try:
        for k in keys[:last + 1]:
            m[k] = None
        rows = []
        for k in keys[last + 1:last + 1 + count]:
            a = ru(who).ru_minflt
            t0 = t()
            m[k] = None
            dt = t() - t0
            rows.append((ru(who).ru_minflt - a, dt))
    finally:
        gc.enable()
    agg = []
    for lo in range(0, len(rows), runs_of):
        chunk = rows[lo:lo + runs_of]
        agg.append({"first": lo, "faults": sum(f for f, _ in chunk),
                    "max_faults": max(f for f, _ in chunk),
                    "ns": sum(d for _, d in chunk)})
    return {"migration_at": last + 1, "runs_of": runs_of, "rows": agg}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller maps, 2 runs")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--only", default="", help="comma-separated scenario prefixes")
    ap.add_argument("--peers", default="", help="comma-separated peers (default: all)")
    args = ap.parse_args(argv)
    runs = 2 if args.quick else 3
    res = Results("latency")
    overhead = timer_overhead_ns()
    res.extra.update(quick=args.quick, runs=runs, windows=list(WINDOWS),
                     timer_overhead_ns=overhead)
    ps = peers()
    if args.peers:
        ps = {k: v for k, v in ps.items() if k in args.peers.split(",")}
    only = [s for s in args.only.split(",") if s]
    for name, build, ops in scenarios(args.quick):
        if only and not any(name.startswith(o) for o in only):
            continue
        for peer, factory in ps.items():
            progress(f"[latency] {name}: {peer} ({runs} runs)")
            tr = trace_min(build(factory), ops, runs)
            worst, total = worst_windows(tr, overhead)
            del tr
            res.add(scenario=name, structure=peer, ops=len(ops), total_ns=total,
                    worst_ns={str(w): v for w, v in worst.items()})
        del ops
        gc.collect()
    if not only or "faults" in only:
        n = 500_000 if args.quick else 2_000_000
        progress(f"[latency] page faults after HashMap's last migration below {n:,} keys")
        res.extra["faults"] = fault_profile(n)
    os.makedirs(args.out, exist_ok=True)
    path = res.write(args.out)
    table = render(res)
    with open(os.path.join(args.out, "latency.md"), "w") as f:
        f.write(table)
    print(table)
    progress(f"[latency] wrote {path}")
    return 0


ORDER = ("dict", "HashMap", "cykhash.PyObjectMap")


def _fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"


def render(res):
    ws = res.extra["windows"]
    lines = [f"Worst total time of w consecutive operations (each operation's minimum over "
             f"{res.extra['runs']} runs, timer overhead subtracted); in brackets: that worst "
             f"/ the mean time of w operations over the whole scenario.", "",
             "| scenario | structure | " + " | ".join(f"w={w:,}" for w in ws) + " |",
             "|---|---|" + "---|" * len(ws)]
    rows = sorted(res.rows, key=lambda r: (res.rows.index(
        [x for x in res.rows if x["scenario"] == r["scenario"]][0]),
        ORDER.index(r["structure"]) if r["structure"] in ORDER else 9))
    for r in rows:
        mean = r["total_ns"] / r["ops"]
        cells = []
        for w in ws:
            v = r["worst_ns"].get(str(w))
            cells.append("" if v is None else f"{_fmt(v)} ({v / (mean * w):.0f}x)")
        label = f"**{r['structure']}**" if r["structure"] == "HashMap" else r["structure"]
        lines.append(f"| {r['scenario']} | {label} | " + " | ".join(cells) + " |")
    # HashMap's worst against dict's worst, per window
    lines += ["", "dict's worst window / HashMap's worst window (higher = HashMap better):", "",
              "| scenario | " + " | ".join(f"w={w:,}" for w in ws) + " |",
              "|---|" + "---|" * len(ws)]
    for sc in dict.fromkeys(r["scenario"] for r in res.rows):
        d = [r for r in res.rows if r["scenario"] == sc and r["structure"] == "dict"]
        h = [r for r in res.rows if r["scenario"] == sc and r["structure"] == "HashMap"]
        if d and h:
            lines.append(f"| {sc} | " + " | ".join(
                f"{d[0]['worst_ns'][str(w)] / max(1, h[0]['worst_ns'][str(w)]):.1f}x"
                for w in ws) + " |")
    f = res.extra.get("faults")
    if f:
        lines += ["", f"HashMap: minor page faults and time of the inserts after the migration "
                  f"that starts at {f['migration_at']:,} keys, per {f['runs_of']} inserts:", "",
                  "| inserts | faults | max faults / insert | time |", "|---|---|---|---|"]
        for r in f["rows"]:
            lines.append(f"| {r['first']}–{r['first'] + f['runs_of'] - 1} | {r['faults']} | "
                         f"{r['max_faults']} | {_fmt(r['ns'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
