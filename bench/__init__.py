"""Benchmarks against peers: one run, side by side, ratios. `make bench` runs `python -m bench`."""
