"""Benchmark: row-wise ``steer=doc`` generation on the demo's 7 x 7 forcing grid (issue 14).

``python -m benchmarks.run grid [--quick]``. The measurement lives with the other steering
benchmarks: :func:`benchmarks.bench_steering.grid`, described under (e) in that module's docstring.
"""

from benchmarks.bench_steering import grid as run  # noqa: F401  the runner calls run(quick=...)
