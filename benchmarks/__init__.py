"""Benchmarks for the workloads in ../shared/BENCHMARKS.md (run with python -m benchmarks.NAME)."""
