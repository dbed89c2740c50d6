"""Benchmark scripts (run as ``python -m benchmarks.<name>``) and the signals they share."""
