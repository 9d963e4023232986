"""Benchmarks of braze-relay: scripts that start the Procfile's processes, load them with wrk, print figures.

Run them from the checkout root with the venv active, e.g. `python -m bench.pipeline --with-anchors`.
"""
