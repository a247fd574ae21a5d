"""fastmaps benchmarks. Run with ``python -m benchmarks`` (see benchmarks/README.md)."""
