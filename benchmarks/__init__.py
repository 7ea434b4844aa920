"""Side-by-side benchmarks of lmdbstate; run them with ``python -m benchmarks``."""
