"""A learnable miniature world for checking the adaptation method end to end on CPU (issue 9).

`worlds` draws the general world (scenes with objects) and reuses `pipelines.fixtures.sample_data` for the domain
(radiograph-like scans); `data` writes the training and evaluation sets in the layouts the real code
reads; `models` builds and caches the small generalist VLM, its tuned synthesizer and a trained text judge.
The experiment driver is `pipelines/experiments/method_check/`; results are in docs/method-check.md.
"""
