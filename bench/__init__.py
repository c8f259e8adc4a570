"""Benchmarks: run as scripts (`python bench/NAME.py`), never as timed tests."""
