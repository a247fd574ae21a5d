"""fastmaps benchmarks: ``python -m benchmarks --quick`` or ``--full`` (see __main__.py and
docs/performance.md for the method)."""
