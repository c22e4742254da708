"""Guard benchmarks: detection quality on the labelled corpora and speed, one JSON line each.

Run: ``.venv/bin/python -m bench.guards``.
"""
