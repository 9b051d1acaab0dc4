"""Benchmarks: continual-learning runs (``see bench``) and serving cost (``see bench-serve``)."""
