"""The showcase (``python -m fastmaps``) runs end to end and prints its table."""
import re
import subprocess
import sys

import pytest

from fastmaps import __main__ as tour


def test_showcase_prints_every_row(capsys):
    assert tour.main(["-n", "20000"]) == 0
    out = capsys.readouterr().out
    for op in ("worst insert, growing to 20,000", "lookup (hit)", "'in' (miss)",
               "update an existing key", "iterate (per key)",
               "insert into a new map (per key)", "... presized: with_capacity(n)",
               "point-in-time copy of the map", "get a 64 KiB buffer, fill 4 KiB",
               "get+put pair (the floor)"):
        line = next((ln for ln in out.splitlines() if op in ln), None)
        assert line is not None, op
        # every row ends in a ratio: 0.97 or 1/1,234
        assert re.search(r"(\d+\.\d\d|1/[\d,]+)$", line.rstrip()), line
    assert "requests without allocating" in out


def test_latency_trace_min_keeps_the_per_position_minimum():
    keys = list(range(5000))
    best, raw_worst = tour.latency_trace_min(dict, keys, runs=2)
    assert len(best) == len(keys) and raw_worst >= max(best) > 0


def test_module_entry_point_and_plot_option(tmp_path):
    png = tmp_path / "trace.png"
    r = subprocess.run([sys.executable, "-m", "fastmaps", "-n", "5000", "--plot", str(png)],
                       capture_output=True, text=True, timeout=300)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert r.returncode == 2 and "needs matplotlib" in r.stderr
        assert not png.exists()
    else:
        assert r.returncode == 0, r.stderr
        assert png.stat().st_size > 1000
        assert "Latency trace written to" in r.stdout


@pytest.mark.parametrize("r, text", [(0.5, "0.50"), (1.25, "1.25"), (0.01, "1/100"),
                                     (1 / 1234, "1/1,234")])
def test_ratio_format(r, text):
    assert tour.fmt_ratio(r) == text
