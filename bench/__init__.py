"""Benchmarks that run the real bot process against the test fakes (see bench/README.md)."""
