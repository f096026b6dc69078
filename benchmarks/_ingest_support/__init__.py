"""Helpers of benchmarks/ingest.py: event bodies, the load generator, and the benchmark's server config.

Kept out of `apps/` on purpose: the naive baseline view and its URL exist only for the benchmark.
"""
