"""Does the synthesizer read its caption? Synthesize tasks for held-out domain captions through the synth
stage with minimed.yaml's settings (the pipeline's prompt, engine, stopping, parser and limits) and check each
task against the scan's ground truth (`pipelines.experiments.miniworld.domain.grounding`).

    python -m pipelines.experiments.method_check.grounding [MODEL_DIR] [--n 48]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GROUNDING_SEED = 23  # a domain item stream of its own: not the caption, validation or test images


def synthesize(model_dir: Path, items: list[tuple[dict, Any, str]], max_tokens: int = 160) -> list[list[dict]]:
    """Tasks the synthesizer writes for each (attributes, image, caption), as the synth stage parses them
    (in this process: call under an `if __name__ == "__main__":` guard, vLLM spawns its engine)."""
    from pipelines.config import load_config
    from pipelines.core.rows import get_tasks, is_active
    from pipelines.fixtures.sample_data import USER_PROMPT, png_bytes
    from synth.stage import SynthStage

    cfg = load_config("minimed", overrides=[f"synth.model={model_dir}", f"synth.max_tokens={max_tokens}"])
    stage = SynthStage(cfg.synth, cfg.input.max_image_pixels)
    try:
        rows = [{"id": f"g{i}", "image": png_bytes(img), "caption": cap, "user_prompt": USER_PROMPT}
                for i, (_, img, cap) in enumerate(items)]
        stage.process(rows)
    finally:
        stage.close()
    return [get_tasks(r) if is_active(r) else [] for r in rows]


def measure(model_dir: Path, n: int = 48, max_tokens: int = 160) -> dict[str, Any]:
    """Grounding shares on n held-out domain captions, plus a few examples to read."""
    from pipelines.experiments.miniworld.domain import asks_domain, grounded, grounding
    from pipelines.fixtures.sample_data import make_item

    items = [make_item("biomed", i, GROUNDING_SEED) for i in range(n)]
    tasks = synthesize(model_dir, items, max_tokens)
    result = grounding([(a, ts) for (a, _, _), ts in zip(items, tasks, strict=True)])
    result["examples"] = [
        {"caption": cap, "tasks": [{**{k: t.get(k) for k in ("instruction", "precise")},
                                    "grounded": grounded(t, a), "asks_domain": asks_domain(t)} for t in ts]}
        for (a, _, cap), ts in list(zip(items, tasks, strict=True))[:4]
    ]
    return result


def main(argv: list[str] | None = None) -> int:
    import argparse

    from pipelines.experiments.miniworld import models

    ap = argparse.ArgumentParser(prog="python -m pipelines.experiments.method_check.grounding", description=__doc__)
    ap.add_argument("model", nargs="?", default=None, help="synthesizer folder (default: the miniworld synthesizer)")
    ap.add_argument("--n", type=int, default=48, help="held-out domain captions")
    a = ap.parse_args(argv)
    model = Path(a.model) if a.model else models.ensure("synthesizer")
    print(json.dumps(measure(model, a.n)))  # one line, after the engine's own logging
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
