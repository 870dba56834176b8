"""Benchmarks, measured as docs/benchmarks.md's "How we measure" says: each prints one JSON object as its last line."""
