"""Build script: the Cython extensions and the one place for compiler directives.

Environment toggles:
  FASTMAPS_DEBUG=1     bounds/initialisation checks on, asserts on, -O0 -g
  FASTMAPS_ANNOTATE=1  write Cython's annotated HTML next to each .pyx
"""
import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTMAPS_DEBUG") == "1"

# The single directives dict for every module (no per-file "# cython:" headers).
DIRECTIVES = {
    "language_level": 3,
    "embedsignature": True,
    "binding": True,
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "infer_types": True,
    # every module is safe without the GIL (per-object critical sections in HashMap and
    # ObjectPool, atomics and a writer lock in SnapshotMap): importing fastmaps on a
    # free-threaded build leaves the GIL off
    "freethreading_compatible": True,
}

here = Path(__file__).parent
sources = sorted((here / "src" / "fastmaps").glob("*.pyx"))
if not sources:
    # Without this check setuptools would build a package with no extension modules, and
    # `import fastmaps` would only fail later with ModuleNotFoundError: fastmaps._hashmap.
    raise SystemExit(
        f"fastmaps: no Cython sources (src/fastmaps/*.pyx) under {here}: this tree cannot "
        "build the extensions. Build from a clone of the repository or from a complete "
        "sdist (which ships the .pyx files; Cython is a build requirement)."
    )
pkg = here / "src" / "fastmaps"
# The hand-written C: fm_common.h is shared by every module; each structure may have its
# own header (fm_snapshot.h, fm_memory.h, fm_pool.h), declared to Cython by a .pxd.
headers = sorted(str(h.relative_to(here)) for h in pkg.glob("*.h"))
pxds = sorted(str(h.relative_to(here)) for h in pkg.glob("fm_*.pxd"))
# -Wall -Wextra: the hand-written headers compile clean under both (tests/test_c_sources.py
# compiles each one alone with -Werror); Cython's generated code is not ours to fix, so
# the warning classes it triggers by design are switched off.
WARNINGS = ["-Wall", "-Wextra", "-Wno-unused-function", "-Wno-unused-parameter",
            "-Wno-missing-field-initializers", "-Wno-unused-but-set-variable"]
extensions = []
for pyx in sources:
    extensions.append(
        Extension(
            f"fastmaps.{pyx.stem}",
            [str(pyx.relative_to(here))],
            include_dirs=[str(pkg.relative_to(here))],
            depends=headers + pxds,
            extra_compile_args=WARNINGS + (["-O0", "-g", "-UNDEBUG"] if DEBUG else ["-O2"]),
            define_macros=(
                [("FASTMAPS_DEBUG", "1"), ("CYTHON_TRACE", "0")] if DEBUG else [("NDEBUG", "1")]
            ),
        )
    )

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=DIRECTIVES,
        annotate=os.environ.get("FASTMAPS_ANNOTATE") == "1",
    )
)
