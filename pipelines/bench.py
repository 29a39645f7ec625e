"""Benchmarks (not tests): each reports a ratio against a baseline measured in the same run.

    vlm-adapt-bench synth  [options]   # whole synth stage vs bare vllm.LLM.generate; RSS at N and 10N
    vlm-adapt-bench filter [options]   # judge throughput, prefix caching on vs off
    vlm-adapt-bench train  [options]   # our SFT recipe vs a plain HF Trainer: tokens/s, padding
    vlm-adapt-bench method [options]   # method check on the miniature world (docs/method-check.md)
    vlm-adapt-bench memory driver|images [options]   # driver flat at 1M rows; MiB per 1k JPEGs
    vlm-adapt-bench gpu    [--dry-run]  # GPU: training tokens/s + MFU vs HF Trainer, transformers engine

(`python -m pipelines.bench ...` and `python pipelines/bench.py ...` in an installed checkout are the same.)
Results and the commands that produced them are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def _synth(argv: list[str]) -> int:
    from pipelines.benches.synth import main

    return main(argv)


def _filter(argv: list[str]) -> int:
    from pipelines.benches.judge import main

    return main(argv)


def _train(argv: list[str]) -> int:
    from pipelines.benches.train import main

    return main(argv)


def _method(argv: list[str]) -> int:
    from pipelines.experiments.method_check.cli import main

    return main(argv)


def _memory(argv: list[str]) -> int:
    from pipelines.benches.memory import main

    return main(argv)


def _gpu(argv: list[str]) -> int:
    from pipelines.benches.gpu import main

    return main(argv)


# imported lazily: each bench pulls in its own heavy stack (vLLM, Ray, torch)
BENCHES: dict[str, Callable[[list[str]], int]] = {"synth": _synth, "filter": _filter, "train": _train, "method": _method,
                                                   "memory": _memory, "gpu": _gpu}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHES:
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return BENCHES[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
