"""Benchmarks that run the real bot process against the test fakes (see docs/performance.md, the hot path)."""
