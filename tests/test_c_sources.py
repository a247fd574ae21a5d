"""The hand-written C headers under src/fastmaps compile alone, warning-free.

Each header is compiled by itself (as its own translation unit, so it must include what it
uses) with -Wall -Wextra -Werror against this interpreter's headers: on a free-threaded
interpreter that compiles the free-threaded branches. Unused static functions are allowed
(a header defines helpers that only some includers call).
"""
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "fastmaps"
HEADERS = sorted(SRC.glob("fm_*.h"))
CC = shutil.which(sysconfig.get_config_var("CC").split()[0] if sysconfig.get_config_var("CC") else "cc") or shutil.which("cc")


def test_headers_are_present():
    if not SRC.is_dir():
        pytest.skip("no source tree beside the tests (installed tests only)")
    assert {h.name for h in HEADERS} >= {"fm_common.h", "fm_snapshot.h", "fm_memory.h", "fm_pool.h"}


@pytest.mark.skipif(CC is None, reason="no C compiler")
@pytest.mark.parametrize("header", HEADERS, ids=lambda h: h.name)
def test_header_compiles_alone_without_warnings(header, tmp_path):
    include = sysconfig.get_paths()["include"]
    cmd = [CC, "-fsyntax-only", "-Wall", "-Wextra", "-Wno-unused-function", "-Werror",
           f"-I{include}", f"-I{SRC}", "-x", "c", str(header)]
    for debug in ("0", "1"):
        r = subprocess.run(cmd + [f"-DFASTMAPS_DEBUG={debug}"], capture_output=True, text=True)
        assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
