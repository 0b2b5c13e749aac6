"""Benchmarks (BENCHMARKS.md): ``python -m bench [--smoke] [--only NAMES]``; see :mod:`bench.run`."""
