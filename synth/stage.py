"""Synth stage: image + caption -> synthesizer text -> {instruction, precise, informative} triplets.

One batched engine call per batch. Task-level outcomes never drop the row: a prompt that cannot fit
the engine (`too_long`; image placeholder tokens are never truncated), output without a complete
precise/informative pair (`unparseable`, raw text kept) and instructions seen with one hint only
(`unpaired`) go to `task_rejects`; the image flows on with its caption task either way.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from pipelines.core.images import ImageRejected, decode_image, resize_max_pixels
from pipelines.core.rows import add_count, add_task_rejects, set_tasks
from pipelines.core.stage import Stage
from pipelines.core.engines import Engine, GenRequest, SamplingSettings, engine_pool_options, make_engine
from synth.config import SynthConfig
from synth.parse import ParseResult, first_completed, parse_output
from synth.prompt import load_preset, render_prompt

log = logging.getLogger(__name__)

STAGE = "synth"


def sampling_settings(s: SynthConfig) -> SamplingSettings:
    preset = load_preset(s.preset)
    return SamplingSettings(
        max_tokens=s.max_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        seed=s.seed,
        stop=list(preset.stop),
        skip_special_tokens=preset.skip_special_tokens,
        ignore_eos=preset.ignore_eos,
    )


class SynthStage(Stage):
    """Visual instruction synthesis with the engine named by `cfg.synth.engine`.

    `engine=` is the injection hook for tests and benchmarks: any object with `generate`,
    `count_prompt_tokens` and `processor` (None is fine for `render: template` presets).
    """

    name: ClassVar[str] = STAGE
    requires: ClassVar[dict[str, str]] = {
        "image": "normalized RGB PNG bytes (from ingest)",
        "caption": "ground-truth caption",
        "user_prompt": "caption task's user turn (used with synth.use_source_prompt)",
    }
    adds: ClassVar[dict[str, Any]] = {"synth_text": "", "n_prompt_tokens": 0, "n_output_tokens": 0}

    def __init__(self, cfg: SynthConfig, max_image_pixels: int, engine: Engine | None = None) -> None:
        """`cfg.model` is a path or hub id (references are resolved at the edge); `max_image_pixels` is the
        ingest limit (`input.max_image_pixels`), re-checked when the image is decoded here."""
        self.cfg = cfg
        self.preset = load_preset(cfg.preset)
        self.max_image_pixels = max_image_pixels
        self._owns_engine = engine is None  # an injected engine belongs to the caller
        if engine is None:
            engine = make_engine(
                cfg.model,
                cfg,
                sampling=sampling_settings(cfg),
                multimodal=True,
                max_model_len=cfg.max_model_len,
                limit_images=1,
            )
        self.engine = engine

    @classmethod
    def ray_options(cls, cfg: SynthConfig) -> dict[str, Any]:
        """map_batches kwargs: one engine per actor, GPUs per actor = tensor parallel size on CUDA."""
        return engine_pool_options(cfg, cfg.batch_size)

    def _request(self, row: dict[str, Any]) -> GenRequest:
        img = decode_image(row["image"], self.max_image_pixels)
        img = resize_max_pixels(img, self.cfg.max_pixels)
        question = row.get("user_prompt") if self.cfg.use_source_prompt else None
        prompt = render_prompt(self.preset, row["caption"], question or None, getattr(self.engine, "processor", None))
        return GenRequest(prompt=prompt, images=[img])

    def process(self, rows: list[dict[str, Any]]) -> None:
        todo: list[tuple[dict[str, Any], GenRequest]] = []
        limit = self.cfg.max_model_len - 1  # leave room for at least one new token
        for row in rows:
            try:
                req = self._request(row)
            except ImageRejected as e:
                self._reject(row, e.reason, e.detail)
                continue
            n = self.engine.count_prompt_tokens(req)
            row["n_prompt_tokens"] = n
            if n > limit:
                self._reject(row, "too_long", f"{n} prompt tokens (image tokens included) > max_model_len - 1 = {limit}")
                continue
            todo.append((row, req))
        if not todo:
            return
        results = self.engine.generate([req for _, req in todo])
        if len(results) != len(todo):
            raise RuntimeError(f"engine returned {len(results)} results for {len(todo)} requests")
        for (row, _), res in zip(todo, results, strict=True):
            row["synth_text"] = res.text
            row["n_prompt_tokens"] = res.n_prompt_tokens
            row["n_output_tokens"] = res.n_output_tokens
            self._apply(row, parse_output(res.text, self.preset, finished=res.finish_reason == "stop"), res.text)

    def _apply(self, row: dict[str, Any], parsed: ParseResult, text: str) -> None:
        kept, over = first_completed(parsed, self.cfg.max_triplets)
        set_tasks(row, [dict(t) for t in kept])
        rejects = [
            {"stage": STAGE, "reason": "unpaired", "instruction": u["instruction"], u["hint"]: u["answer"],
             "detail": f"instruction seen only with the {u['hint']} hint"}
            for u in parsed.unpaired
        ]
        rejects += [{"stage": STAGE, "reason": "over_max_triplets", **t,
                     "detail": f"synth.max_triplets={self.cfg.max_triplets}: pairs completed earlier are kept"}
                    for t in over]
        if parsed.unparseable:
            detail = (
                f"no complete precise/informative pair: {parsed.n_turns} complete turns, "
                f"{parsed.n_malformed} malformed, truncated={parsed.truncated}"
            )
            rejects.append({"stage": STAGE, "reason": "unparseable", "detail": detail, "text": text})
        if rejects:
            add_task_rejects(row, rejects)
        ok = 0 if parsed.unparseable else 1
        add_count(row, STAGE, n_in=1, n_out=ok, n_rejected=1 - ok)

    def close(self) -> None:
        """Release the engine (vLLM engine process included)."""
        self.engine.close()

    def __del__(self) -> None:
        # Frees the engine when the stage is released: by Ray Data's `__ray_shutdown__` on a graceful exit,
        # or (when something still holds the stage) as the actor's interpreter exits. Either way Ray has
        # already killed the actor's child processes, so an engine core that is a child would die mid-way;
        # `init_ray` keeps it in-process.
        engine = getattr(self, "engine", None)  # unset when building it failed
        if engine is not None and self._owns_engine:
            engine.close()

    @staticmethod
    def _reject(row: dict[str, Any], reason: str, detail: str) -> None:
        add_task_rejects(row, [{"stage": STAGE, "reason": reason, "detail": detail}])
        add_count(row, STAGE, n_in=1, n_out=0, n_rejected=1)
