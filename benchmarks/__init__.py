"""Performance harness: ``python -m benchmarks [--quick] [--json FILE]`` (figures, not timed tests)."""
