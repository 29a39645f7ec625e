"""The method check on the miniature world (docs/method-check.md): `experiment` runs it, `evaluation` scores
models, `cli` is `pipelines/bench.py method`."""
