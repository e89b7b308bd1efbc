"""Performance benchmarks (``bench_*.py``, each with ``run() -> list[dict]``); run them with
``python -m benchmarks.run`` (see :mod:`benchmarks.run`)."""
