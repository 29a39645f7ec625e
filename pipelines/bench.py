"""Benchmarks (not tests): each reports a ratio against a baseline measured in the same run.

    python pipelines/bench.py synth  [options]   # whole synth stage vs bare vllm.LLM.generate; RSS at N and 10N
    python pipelines/bench.py filter [options]   # judge throughput, prefix caching on vs off
    python pipelines/bench.py train  [options]   # our SFT recipe vs a plain HF Trainer: tokens/s, padding
    python pipelines/bench.py method [options]   # method check on the miniature world (docs/method-check.md)
    python pipelines/bench.py memory driver|images [options]   # driver flat at 1M rows; MiB per 1k JPEGs
    python pipelines/bench.py gpu    [--dry-run] # GPU: training tokens/s + MFU vs HF Trainer, transformers engine

Results and the commands that produced them are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

if __name__ == "__main__" and sys.path and Path(sys.path[0]).name == "pipelines":
    sys.path.pop(0)

BENCHES = {"synth": "synth.bench", "filter": "filters.bench", "train": "posttrain.bench",
           "method": "posttrain.method_check", "memory": "pipelines.memory_bench", "gpu": "posttrain.gpu_bench"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHES:
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return importlib.import_module(BENCHES[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
