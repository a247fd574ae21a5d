"""Markdown tables from the JSON files in benchmarks/results/ (no measurement here).

Used by ``python -m benchmarks`` to write results/summary.md, and by the docs build
(tools/docs_hooks.py) to put the same tables into docs/performance.md, so the published
tables are always the committed results.
"""
from __future__ import annotations

import json
import os
from types import SimpleNamespace

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SUITES = ("hashmap", "latency", "snapshot", "snapshot_cost", "pool", "pool_threads",
          "freethreaded")


def load(name: str, directory: str = RESULTS):
    path = os.path.join(directory, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _ns(x: float) -> str:
    if x >= 1e6:
        return f"{x/1e6:.2f} ms"
    if x >= 1e3:
        return f"{x/1e3:.1f} µs"
    return f"{x:.0f} ns"


def render_machine(directory: str = RESULTS) -> str:
    run = load("run", directory)
    if run is None:  # fall back to the machine block of any suite
        for s in SUITES:
            data = load(s, directory)
            if data:
                run = {"machine": data["machine"], "mode": "?", "suites": {}}
                break
        else:
            return "_No results yet: run `python -m benchmarks`._\n"
    m = run["machine"]
    pk = m.get("packages", {})
    lines = ["| | |", "|---|---|",
             f"| command | `{run.get('command', 'python -m benchmarks')}` ({run.get('mode', '?')} run) |",
             f"| date | {m.get('time', '?')} |",
             f"| CPU | {m.get('cpu_model', '?')}, {m.get('cpus', '?')} logical CPUs |",
             f"| OS | {m.get('platform', '?')} |",
             f"| Python | {m.get('implementation', '')} {m.get('python', '?')} |",
             f"| fastmaps | {m.get('fastmaps', '?')} |"]
    for name, ver in pk.items():
        lines.append(f"| {name} | {ver or 'not installed'} |")
    for name, secs in run.get("suites", {}).items():
        lines.append(f"| time for `{name}` | {secs:.0f} s |")
    return "\n".join(lines) + "\n"


def render_hashmap(directory: str = RESULTS) -> str:
    data = load("hashmap", directory)
    if data is None:
        return "_No HashMap results yet._\n"
    from .bench_hashmap import render
    text = render(SimpleNamespace(rows=data["rows"], extra=data["extra"], machine=data["machine"]))
    return text.split("\n", 2)[2]        # drop the title line; the page has its own headings


def render_latency(directory: str = RESULTS) -> str:
    data = load("latency", directory)
    if data is None:
        return "_No latency-window results yet._\n"
    from .bench_latency import render
    return render(SimpleNamespace(rows=data["rows"], extra=data["extra"], machine=data["machine"]))


def render_snapshot(directory: str = RESULTS) -> str:
    data = load("snapshot", directory)
    if data is None:
        return "_No SnapshotMap results yet._\n"
    rows = data["rows"]
    cols = []
    for r in rows:
        if r["ratio"] is not None and r["op"] not in ("reads/s while a thread writes",
                                                      "snapshot() at n / at 1e3"):
            if (r["n"], r["keys"]) not in cols:
                cols.append((r["n"], r["keys"]))
    lines = ["Time ratios SnapshotMap / reference (median of the repeats, interleaved; "
             "below 1 = SnapshotMap faster):", "",
             "| operation | reference | " + " | ".join(f"{k} n={n:,}" for n, k in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    seen = []
    for r in rows:
        key = (r["op"], r["reference"])
        if r["ratio"] is None or key in seen or (r["n"], r["keys"]) not in cols:
            continue
        seen.append(key)
        cells = []
        for n, k in cols:
            hit = [x for x in rows if (x["op"], x["reference"]) == key and x["n"] == n
                   and x["keys"] == k]
            cells.append(f"{hit[0]['ratio']:.2f}" if hit else "")
        lines.append(f"| {r['op']} | {r['reference']} | " + " | ".join(cells) + " |")
    lines += [""]
    for r in rows:
        if r["op"] == "reads/s while a thread writes":
            lines.append(f"* Reads while another thread writes (n={r['n']:,}): {r['note']}.")
        if r["op"] == "snapshot() at n / at 1e3":
            lines.append(f"* `snapshot()` at n={r['n']:,} takes {r['ratio']:.2f}x its time at "
                         f"n=1,000 ({_ns(r['cand_ns'])} vs {_ns(r['ref_ns'])}).")
    imm = data.get("extra", {}).get("immutables")
    lines.append(f"* immutables: {imm or 'not installed (its rows are missing)'}.")
    return "\n".join(lines) + "\n"


def render_snapshot_cost(directory: str = RESULTS) -> str:
    data = load("snapshot_cost", directory)
    if data is None:
        return "_No snapshot-cost results yet._\n"
    lines = ["| n | SnapshotMap.snapshot() | dict.copy() | dict.copy() under a Lock | "
             "snapshot / copy |", "|---|---|---|---|---|"]
    for r in data["rows"]:
        lines.append(f"| {r['n']:,} | {_ns(r['snapshot_ns'])} | {_ns(r['dict_copy_ns'])} | "
                     f"{_ns(r['locked_copy_ns'])} | {r['ratio_snapshot_vs_copy']:.2g} |")
    return "\n".join(lines) + "\n"


def render_pool(directory: str = RESULTS) -> str:
    data = load("pool", directory)
    if data is None:
        return "_No ObjectPool results yet._\n"
    lines = ["| case | reference | reference time | candidate | candidate time | result |",
             "|---|---|---|---|---|---|"]
    for r in data["rows"]:
        val = (f"{r['value']:.2f}x faster" if r["metric"] == "speedup"
               else f"{r['value']:.2f}x the time")
        lines.append(f"| {r['case']} | {r['reference']} | {_ns(r['ref_ns'])} | "
                     f"{r['candidate']} | {_ns(r['cand_ns'])} | {val} |")
    return "\n".join(lines) + "\n"


def render_pool_threads(directory: str = RESULTS) -> str:
    data = load("pool_threads", directory)
    if data is None:
        return "_No ObjectPool thread-scaling results yet._\n"
    py = data["machine"].get("python", "?")
    lines = [f"Python {py}; each thread loops `x = pool.get(); pool.put(x)` on one shared "
             "pool; pairs per second summed over the threads.", "",
             "| threads | pairs/s (median) | min | max | GIL |", "|---|---|---|---|---|"]
    for r in data["rows"]:
        lines.append(f"| {r['threads']} | {r['pairs_per_s'] / 1e6:.2f} M | "
                     f"{r['pairs_per_s_min'] / 1e6:.2f} M | {r['pairs_per_s_max'] / 1e6:.2f} M"
                     f" | {'on' if r['gil_enabled'] else 'off'} |")
    return "\n".join(lines) + "\n"


def render_freethreaded(directory: str = RESULTS) -> str:
    data = load("freethreaded", directory)
    if data is None:
        return "_No free-threaded reader/writer results yet (a free-threaded build runs them)._\n"
    lines = ["| readers | contender | reads/s (median) | writes/s | slowest 1,000 reads | GIL |",
             "|---|---|---|---|---|---|"]
    for r in data["rows"]:
        lines.append(f"| {r['readers']} | {r['contender']} | {r['reads_per_s'] / 1e6:.2f} M | "
                     f"{r['writes_per_s'] / 1e6:.2f} M | {r['worst_batch_ms']:.2f} ms | "
                     f"{'on' if r['gil_enabled'] else 'off'} |")
    return "\n".join(lines) + "\n"


SECTIONS = {
    "machine": render_machine,
    "hashmap": render_hashmap,
    "latency": render_latency,
    "snapshot": render_snapshot,
    "snapshot_cost": render_snapshot_cost,
    "pool": render_pool,
    "pool_threads": render_pool_threads,
    "freethreaded": render_freethreaded,
}


def render_all(directory: str = RESULTS) -> str:
    parts = ["# fastmaps benchmark results", "",
             "Written by `python -m benchmarks`; plots by `python -m benchmarks.plot`. "
             "The method is described in docs/performance.md.", "",
             "## Machine and versions", "", render_machine(directory),
             "## HashMap vs dict and cykhash", "", render_hashmap(directory),
             "## Latency over windows of operations: HashMap vs dict and cykhash", "",
             render_latency(directory),
             "## SnapshotMap vs dict, dict+Lock and immutables.Map", "",
             render_snapshot(directory),
             "## Snapshot cost against size", "", render_snapshot_cost(directory),
             "## ObjectPool vs a list, queue pools and plain allocation", "",
             render_pool(directory),
             "## ObjectPool get+put pairs with 1 and 2 threads", "",
             render_pool_threads(directory),
             "## Free-threaded readers while a writer writes", "",
             render_freethreaded(directory)]
    return "\n".join(parts)
