"""Benchmarks: synthetic suites and the side-by-side comparison runner."""
