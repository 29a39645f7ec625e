"""Benchmarks of the stages against their strongest fair baselines (`vlm-adapt-bench`); edge modules."""
