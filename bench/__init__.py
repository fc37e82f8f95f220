"""Benchmark of flask-basic-gate against a bare Flask route and its peers.

Run ``python -m bench`` (or ``python bench/run.py``) from the repository root;
``--quick`` finishes in well under a minute and is what CI runs. Timings are
reported, never asserted: a missed target is printed, not raised.
"""
