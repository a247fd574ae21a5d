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
extensions = []
for pyx in sources:
    extensions.append(
        Extension(
            f"fastmaps.{pyx.stem}",
            [str(pyx.relative_to(here))],
            extra_compile_args=(["-O0", "-g", "-UNDEBUG"] if DEBUG else ["-O2"]),
            define_macros=([("CYTHON_TRACE", "0")] if DEBUG else [("NDEBUG", "1")]),
        )
    )

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=DIRECTIVES,
        annotate=os.environ.get("FASTMAPS_ANNOTATE") == "1",
    )
)
