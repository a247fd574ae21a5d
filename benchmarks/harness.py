"""The one timing harness shared by every fastmaps benchmark.

Method (the same for every structure):
* inputs are generated from a seeded ``random.Random`` so runs are reproducible;
* each measurement runs a warm-up call, then ``repeats`` timed calls;
* the garbage collector is disabled during timed sections (and collected between them);
* we report the median, min and max of the repeats, in seconds per operation;
* ratios are always taken against a reference measured in the same process, in the same run,
  interleaved with the candidate (reference, candidate, reference, candidate, ...), so that
  machine noise affects both sides alike (``compare`` for one candidate, ``compare_many``
  for several peers at once);
* per-operation latency traces subtract the measured cost of the timer call itself
  (``timer_overhead_ns``);
* sizes are powers of ten (``powers_of_ten``); optional peers are imported with
  ``optional_peer`` and skipped with a message when they are not installed.

Every results file records the machine, the Python version and the versions of fastmaps and
of every peer package (``machine_info``), so a number never travels without its context.
"""
from __future__ import annotations

import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

perf_counter = time.perf_counter
perf_counter_ns = time.perf_counter_ns


PEER_PACKAGES = ("cykhash", "immutables", "matplotlib", "Cython")


def rng(seed: int = 12345) -> random.Random:
    return random.Random(seed)


def int_keys(n: int, seed: int = 1) -> list:
    """n distinct pseudo-random ints (not sequential, so probing is exercised)."""
    r = rng(seed)
    return r.sample(range(1 << 40), n)


def str_keys(n: int, seed: int = 2) -> list:
    """n distinct str keys like 'k3f9a21c0' (fresh objects, hash not cached beforehand)."""
    return [f"k{x:x}" for x in int_keys(n, seed)]


def miss_keys(keys: list) -> list:
    """Keys of the same kind as ``keys`` that are absent from it.

    Caution for int keys: ``k + 2**41`` has the same low 41 bits as ``k`` and int hashes
    are the identity, so in a table probed like dict's (``i = hash & mask``, perturbation
    shifted in 5 bits per step) each such miss follows a present key's probe sequence for
    its first probes: a guaranteed collision chain (about 2.3 occupied slots visited per
    miss at 1e6 instead of 0.9 for a typical absent key).  ``absent_keys`` gives typical
    misses."""
    if keys and isinstance(keys[0], str):
        return [k + "_" for k in keys]
    return [k + (1 << 41) for k in keys]


def absent_keys(keys: list, seed: int = 3) -> list:
    """len(keys) keys absent from ``keys``, drawn from the same distribution (ints: the
    same range as ``int_keys``, in random order; strs: as ``miss_keys``, whose hashes are
    unrelated to the present keys'): a typical miss, not a collision chain."""
    if keys and isinstance(keys[0], str):
        return [k + "_" for k in keys]
    present = set(keys)
    r = rng(seed)
    out: list = []
    while len(out) < len(keys):
        x = r.randrange(1 << 40)
        if x not in present:
            out.append(x)
    return out


@dataclass
class Timing:
    median: float
    min: float
    max: float
    repeats: int

    def as_dict(self) -> dict:
        return asdict(self)


def timeit(fn: Callable[[], object], ops: int = 1, repeats: int = 5, warmup: int = 1) -> Timing:
    """Time ``fn()`` (which performs ``ops`` operations); seconds per operation."""
    for _ in range(warmup):
        fn()
    samples = []
    gc_was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            t0 = perf_counter()
            fn()
            samples.append((perf_counter() - t0) / ops)
    finally:
        if gc_was:
            gc.enable()
    return Timing(statistics.median(samples), min(samples), max(samples), repeats)


def compare(ref: Callable[[], object], cand: Callable[[], object], ops: int = 1,
            repeats: int = 5, warmup: int = 1) -> tuple:
    """Time reference and candidate interleaved; returns (ref Timing, cand Timing, ratio).

    ratio = candidate median / reference median (below 1.0 means the candidate is faster).
    """
    for _ in range(warmup):
        ref()
        cand()
    rs, cs = [], []
    gc_was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            t0 = perf_counter()
            ref()
            t1 = perf_counter()
            cand()
            t2 = perf_counter()
            rs.append((t1 - t0) / ops)
            cs.append((t2 - t1) / ops)
    finally:
        if gc_was:
            gc.enable()
    rt = Timing(statistics.median(rs), min(rs), max(rs), repeats)
    ct = Timing(statistics.median(cs), min(cs), max(cs), repeats)
    return rt, ct, ct.median / rt.median


def compare_many(ref: Callable[[], object], cands: Dict[str, Callable[[], object]],
                 ops: int = 1, repeats: int = 5, warmup: int = 1) -> tuple:
    """Time a reference and several candidates interleaved, round-robin, in one run.

    Returns (ref Timing, {name: (Timing, ratio)}) with ratio = candidate median / reference
    median, like ``compare`` but sharing the reference between peers, so every peer is
    measured under the same machine conditions as the reference it is divided by.
    """
    names = list(cands)
    for _ in range(warmup):
        ref()
        for name in names:
            cands[name]()
    rs: List[float] = []
    cs: Dict[str, List[float]] = {name: [] for name in names}
    gc_was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            t0 = perf_counter()
            ref()
            rs.append((perf_counter() - t0) / ops)
            for name in names:
                t0 = perf_counter()
                cands[name]()
                cs[name].append((perf_counter() - t0) / ops)
    finally:
        if gc_was:
            gc.enable()
    rt = Timing(statistics.median(rs), min(rs), max(rs), repeats)
    out = {}
    for name in names:
        ct = Timing(statistics.median(cs[name]), min(cs[name]), max(cs[name]), repeats)
        out[name] = (ct, ct.median / rt.median)
    return rt, out


def powers_of_ten(lo: int, hi: int) -> List[int]:
    """[10**lo, ..., 10**hi]: benchmark sizes are always powers of ten."""
    return [10 ** e for e in range(lo, hi + 1)]


_REPORTED_MISSING: set = set()


def optional_peer(module: str):
    """Import a peer package, or report (once) that it is skipped and return None."""
    try:
        return __import__(module)
    except ImportError:
        if module not in _REPORTED_MISSING:
            _REPORTED_MISSING.add(module)
            progress(f"  peer {module!r} is not installed: skipped (pip install '.[bench]')")
        return None


def package_versions(names=PEER_PACKAGES) -> Dict[str, Optional[str]]:
    """Installed distribution versions (None when not installed)."""
    from importlib import metadata
    out: Dict[str, Optional[str]] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def timer_overhead_ns(samples: int = 100_000) -> float:
    """Median cost of one perf_counter_ns() pair, subtracted from per-operation traces."""
    best = []
    for _ in range(5):
        t = perf_counter_ns
        t0 = t()
        for _ in range(samples):
            t()
        best.append((t() - t0) / samples)
    return min(best)


def percentile(sorted_values: List[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[k]


def geomean(values) -> float:
    values = [v for v in values if v > 0]
    return statistics.geometric_mean(values) if values else float("nan")


def machine_info() -> dict:
    info = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import fastmaps
        info["fastmaps"] = fastmaps.__version__
    except Exception:  # pragma: no cover - benchmarks need fastmaps, but report cleanly
        info["fastmaps"] = None
    info["packages"] = package_versions()
    return info


@dataclass
class Results:
    """A benchmark's results: rows of measurements plus the machine they came from."""
    name: str
    rows: List[dict] = field(default_factory=list)
    extra: Dict[str, object] = field(default_factory=dict)
    machine: dict = field(default_factory=machine_info)

    def add(self, **row) -> None:
        self.rows.append(row)

    def write(self, directory: str, stem: Optional[str] = None) -> str:
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, (stem or self.name) + ".json")
        with open(path, "w") as f:
            json.dump({"name": self.name, "machine": self.machine, "rows": self.rows,
                       "extra": self.extra}, f, indent=1, sort_keys=True)
            f.write("\n")
        return path


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
