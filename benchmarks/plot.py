"""Draw the benchmark PNGs from the JSON results (no measurement here).

    python -m benchmarks.plot [--results benchmarks/results] [--img docs/img]

Needs matplotlib (``pip install '.[bench]'``). Images:

* hashmap_latency.png    per-insert latency against map size (dict, HashMap, cykhash)
* hashmap_ratios.png     operation-time ratios against dict (HashMap, cykhash)
* memory_per_entry.png   container bytes per entry at 1e6 entries
* latency_windows.png    worst total time of w consecutive operations (bench_latency)
* snapshot_ratios.png    SnapshotMap operation-time ratios against its references
* snapshot_cost.png      snapshot() against dict.copy() as the map grows
* pool_speedups.png      ObjectPool against a list, queue-based pools and plain allocation
"""
from __future__ import annotations

import argparse
import os
import sys

from . import report
from .bench_hashmap import _order

DEFAULT_IMG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "docs", "img")
COLORS = {"dict": "tab:red", "HashMap": "tab:blue", "cykhash.PyObjectMap": "tab:orange",
          "cykhash.Int64toInt64Map": "tab:green"}
LABELS = {"HashMap": "fastmaps.HashMap"}


def _subtitle(data) -> str:
    m = data["machine"]
    quick = data.get("extra", {}).get("quick")
    return (f"Python {m['python']}, {m.get('cpu_model', '?')}, fastmaps {m.get('fastmaps')}"
            + (" (quick run)" if quick else ""))


def _plain_ticks(ax):
    """Log-scaled ratio axes read better as 0.5, 1, 2 than as 5x10^-1."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter(""))


def _save(fig, img, name, saved):
    path = os.path.join(img, name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    saved.append(path)


def plot_latency(plt, data, img, saved):
    """One panel per structure (shared axes): overlaid, the four traces hide each other."""
    lat = data["extra"]["latency"]
    bucket = lat["bucket"]
    names = sorted(lat["trace_max_ns"], key=_order)
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 1.7 * len(names) + 1.2), sharex=True,
                             sharey=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        ys = lat["trace_max_ns"][name]
        xs = [(i + 1) * bucket for i in range(len(ys))]
        ax.plot(xs, [max(y, 1) / 1e6 for y in ys], color=COLORS.get(name), linewidth=0.9)
        worst = lat[name]["worst_ns"] / 1e6
        ax.set_yscale("log")
        ax.grid(True, which="major", alpha=0.3)
        ax.text(0.01, 0.92, f"{LABELS.get(name, name)}: worst {worst:.2f} ms",
                transform=ax.transAxes, va="top", fontsize=9,
                bbox=dict(facecolor="white", alpha=0.8, edgecolor="none"))
    axes[-1, 0].set_xlabel("map size (keys)")
    fig.supylabel(f"worst insert in each run of {bucket:,} (ms, log)", fontsize=9)
    fig.suptitle(f"Per-insert latency while growing to {lat['keys']:,} int keys\n"
                 + _subtitle(data), fontsize=10)
    _save(fig, img, "hashmap_latency.png", saved)
    plt.close(fig)


def plot_hashmap_ratios(plt, data, img, saved):
    rows = data["rows"]
    n = max(r["n"] for r in rows)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharey=True)
    for ax, kind in zip(axes, ("int", "str")):
        sel = [r for r in rows if r["n"] == n and r["kind"] == kind]
        ops = [r["op"] for r in sel]
        structs = ["HashMap"] + sorted({p for r in rows for p in r.get("peers", {})},
                                       key=_order)
        h = 0.8 / len(structs)
        for j, s in enumerate(structs):
            ys, vals = [], []
            for i, r in enumerate(sel):
                v = r["ratio"] if s == "HashMap" else r.get("peers", {}).get(s, {}).get("ratio")
                if v is not None:
                    ys.append(i + (j - (len(structs) - 1) / 2) * h)
                    vals.append(v)
            if vals:
                ax.barh(ys, vals, height=h, color=COLORS.get(s), label=LABELS.get(s, s))
        ax.axvline(1.0, color="tab:red", linewidth=1.2, label="dict = 1")
        ax.set_xscale("log")
        ax.set_yticks(range(len(ops)))
        ax.set_yticklabels(ops)
        _plain_ticks(ax)
        ax.set_xlabel("time / dict time (log; left of the red line = faster than dict)")
        ax.set_title(f"{kind} keys, n={n:,}")
        ax.grid(True, axis="x", which="both", alpha=0.3)
    axes[0].invert_yaxis()                  # shared y axis: invert once, first op on top
    handles, labels = axes[0].get_legend_handles_labels()
    axes[1].legend(handles, labels, loc="lower right", fontsize=8)
    fig.suptitle("HashMap and cykhash operation times relative to dict\n" + _subtitle(data),
                 fontsize=10)
    _save(fig, img, "hashmap_ratios.png", saved)
    plt.close(fig)


def plot_memory(plt, data, img, saved):
    mem = data["extra"].get("bytes_per_entry_1e6")
    if not mem:
        return
    structs = sorted(mem["int"], key=_order)
    kinds = list(mem)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    w = 0.8 / len(structs)
    for j, s in enumerate(structs):
        xs = [i + (j - (len(structs) - 1) / 2) * w for i in range(len(kinds))]
        vals = [mem[k].get(s, 0) for k in kinds]
        bars = ax.bar(xs, vals, width=w, color=COLORS.get(s), label=LABELS.get(s, s))
        for b, v in zip(bars, vals):
            if v:
                ax.annotate(f"{v:.0f}", (b.get_x() + b.get_width() / 2, v), ha="center",
                            va="bottom", fontsize=8)
    ax.set_xticks(range(len(kinds)))
    ax.set_xticklabels([f"{k} keys" for k in kinds])
    ax.set_ylabel("bytes per entry (container only)")
    ax.set_title("Memory per entry at 1,000,000 entries (tracemalloc)\n" + _subtitle(data),
                 fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    _save(fig, img, "memory_per_entry.png", saved)
    plt.close(fig)


def plot_snapshot_ratios(plt, data, img, saved):
    rows = [r for r in data["rows"] if r["ratio"] is not None and r["keys"] == "int"
            and r["op"] not in ("snapshot() at n / at 1e3",)]
    ns = sorted({r["n"] for r in rows if r["op"] != "reads/s while a thread writes"})
    n = 100_000 if 100_000 in ns else ns[-1]
    sel = [r for r in rows if r["n"] == n]
    labels = [f"{r['op']}\nvs {r['reference']}" for r in sel]
    vals = [r["ratio"] for r in sel]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(sel) + 1.6))
    colors = ["tab:blue" if v <= 1 else "tab:gray" for v in vals]
    ax.barh(range(len(sel)), vals, color=colors)
    for i, v in enumerate(vals):
        ax.annotate(f"{v:.2f}", (v, i), va="center", fontsize=8, xytext=(3, 0),
                    textcoords="offset points")
    ax.axvline(1.0, color="tab:red", linewidth=1.2)
    ax.set_xscale("log")
    ax.set_yticks(range(len(sel)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    _plain_ticks(ax)
    ax.set_xlabel("SnapshotMap time / reference time (log; blue = SnapshotMap faster)")
    ax.set_title(f"SnapshotMap against its references, int keys, n={n:,}\n" + _subtitle(data),
                 fontsize=10)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    _save(fig, img, "snapshot_ratios.png", saved)
    plt.close(fig)


def plot_snapshot_cost(plt, data, img, saved):
    rows = data["rows"]
    ns = [r["n"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4.4))
    ax.plot(ns, [r["dict_copy_ns"] for r in rows], "o-", color="tab:red", label="dict.copy()")
    ax.plot(ns, [r["locked_copy_ns"] for r in rows], "s--", color="tab:orange",
            label="dict.copy() under a threading.Lock")
    ax.plot(ns, [r["snapshot_ns"] for r in rows], "o-", color="tab:blue",
            label="SnapshotMap.snapshot()")
    ax.fill_between(ns, [r["snapshot_min_ns"] for r in rows],
                    [r["snapshot_max_ns"] for r in rows], color="tab:blue", alpha=0.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("map size (entries)")
    ax.set_ylabel("time per snapshot (ns, log)")
    ax.set_title("Cost of a point-in-time snapshot against map size\n" + _subtitle(data),
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    _save(fig, img, "snapshot_cost.png", saved)
    plt.close(fig)


def plot_pool(plt, data, img, saved):
    rows = data["rows"]
    ratio = [r for r in rows if r["metric"] == "ratio"]
    speed = [r for r in rows if r["metric"] == "speedup"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.8),
                                 gridspec_kw={"width_ratios": [1.2, 1]})
    a1.barh(range(len(ratio)), [r["value"] for r in ratio], color="tab:blue")
    a1.set_yticks(range(len(ratio)))
    a1.set_yticklabels([f"{r['candidate']}\nvs {r['reference']}" for r in ratio], fontsize=8)
    a1.axvline(1.0, color="tab:red", linewidth=1.2)
    for i, r in enumerate(ratio):
        a1.annotate(f"{r['value']:.2f}", (r["value"], i), va="center", fontsize=8,
                    xytext=(3, 0), textcoords="offset points")
    a1.invert_yaxis()
    a1.set_xscale("log")
    _plain_ticks(a1)
    a1.set_xlabel("time / reference time (log; lower is better)")
    a1.set_title("Get+put cost against a plain list", fontsize=10)
    a1.grid(True, axis="x", alpha=0.3)
    a2.barh(range(len(speed)), [r["value"] for r in speed], color="tab:green")
    a2.set_yticks(range(len(speed)))
    a2.set_yticklabels([r["case"] for r in speed], fontsize=8)
    a2.axvline(1.0, color="tab:red", linewidth=1.2)
    for i, r in enumerate(speed):
        a2.annotate(f"{r['value']:.1f}x", (r["value"], i), va="center", fontsize=8,
                    xytext=(3, 0), textcoords="offset points")
    a2.invert_yaxis()
    a2.set_xlabel("speedup over allocating (higher is better)")
    a2.set_title("Reusing 64 KiB buffers instead of allocating", fontsize=10)
    a2.grid(True, axis="x", alpha=0.3)
    fig.suptitle("ObjectPool\n" + _subtitle(data), fontsize=10)
    _save(fig, img, "pool_speedups.png", saved)
    plt.close(fig)


def plot_latency_windows(plt, data, img, saved):
    """Worst total time of w consecutive operations against w, one panel per scenario."""
    rows = data["rows"]
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    fig, axes = plt.subplots(1, len(scenarios), figsize=(max(8.0, 3.6 * len(scenarios)), 4.2),
                             squeeze=False)
    for ax, sc in zip(axes[0], scenarios):
        for r in sorted((r for r in rows if r["scenario"] == sc),
                        key=lambda r: _order(r["structure"])):
            ws = sorted(int(w) for w in r["worst_ns"])
            ax.plot(ws, [r["worst_ns"][str(w)] / 1e6 for w in ws], "o-",
                    color=COLORS.get(r["structure"]),
                    label=LABELS.get(r["structure"], r["structure"]))
            if r["structure"] == "HashMap":
                mean = r["total_ns"] / r["ops"]
                ax.plot(ws, [3 * mean * w / 1e6 for w in ws], ":", color="tab:blue",
                        linewidth=0.9, label="3 x HashMap's mean")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(sc, fontsize=10)
        ax.set_xlabel("w (consecutive operations)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].set_ylabel("worst total time of w operations (ms, log)")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Latency over windows of operations (each operation's minimum over "
                 f"{data['extra'].get('runs', 1)} runs)\n" + _subtitle(data), fontsize=10)
    _save(fig, img, "latency_windows.png", saved)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=report.RESULTS)
    ap.add_argument("--img", default=None,
                    help="where to write the PNGs (default docs/img/ for the default results "
                         "directory, else the results directory itself)")
    args = ap.parse_args(argv)
    img = args.img or (DEFAULT_IMG if os.path.abspath(args.results) == report.RESULTS
                       else args.results)
    try:
        import matplotlib
    except ImportError:
        print("plot: matplotlib is not installed (pip install '.[bench]'); no PNGs drawn",
              file=sys.stderr)
        return 0
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(img, exist_ok=True)
    saved: list = []
    jobs = (("hashmap", (plot_latency, plot_hashmap_ratios, plot_memory)),
            ("latency", (plot_latency_windows,)),
            ("snapshot", (plot_snapshot_ratios,)),
            ("snapshot_cost", (plot_snapshot_cost,)),
            ("pool", (plot_pool,)))
    for name, fns in jobs:
        data = report.load(name, args.results)
        if data is None:
            print(f"plot: no {name}.json in {args.results}: skipped", file=sys.stderr)
            continue
        for fn in fns:
            fn(plt, data, img, saved)
    for p in saved:
        print(f"plot: wrote {p}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
