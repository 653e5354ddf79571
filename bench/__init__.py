"""The benchmark harness (`make bench`, `python bench/run.py --help`); see docs/benchmarks.md."""
