"""Benchmarks (see ../shared/BENCHMARKS.md): each prints one JSON object as its last line."""
