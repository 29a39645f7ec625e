"""Every post-training stage on every family (tiny random builds, real forward/backward or generate, no mocks).

Each test records its cell of the family x capability table (tests/family_matrix.py -> docs/families.md).
Expected values come from the families' own formats and rules, written out here: the assistant-turn text of each
chat template (model cards), the module layout of each modeling file, M-RoPE ids from the Qwen2-VL paper's rule.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from posttrain.config import TrainConfig
from pipelines.core.contract import messages, write_dataset
from posttrain.encoding import EncodeOptions, clean_messages, encode_example
from tests.family_matrix import cell

FAMILIES = ("vlm", "qwen2-vl", "qwen2.5-vl", "llava-next", "mllama")
COLORS = ("red", "blue", "green")
ANSWERS = lambda i: (f"{COLORS[i % 3]}, bright, round", f"a cell {i}")  # noqa: E731
# What an assistant turn adds after the generation prompt: (before the answer, after it). From the templates'
# documented formats: Idefics3 "Assistant:" + " answer<end_of_utterance>\n"; Qwen2-VL "answer<|im_end|>\n";
# llava-hf llama3-llava-next "\n" + answer + "<|eot_id|>"; Llama-3.2-Vision "answer<|eot_id|>".
TURN = {"vlm": (" ", "<end_of_utterance>\n"), "qwen2-vl": ("", "<|im_end|>\n"), "qwen2.5-vl": ("", "<|im_end|>\n"),
        "llava-next": ("\n", "<|eot_id|>"), "mllama": ("", "<|eot_id|>")}
# Parameter-name prefixes of each group, read off each modeling file. Projector = the vision->text connector
# (Idefics3 connector, LLaVA multi_modal_projector, Qwen2-VL's 2x2 patch merger, Mllama's projection). LLaVA's
# image_newline is trained at the base (language) rate, as LLaVATrainer.create_optimizer does: only
# 'mm_projector' and 'vision_tower' names get their own rates (bigai-ai/QA-Synthesizer llava/train/llava_trainer.py).
GROUP_PREFIXES = {
    "vlm": {"vision": ("model.vision_model.",), "projector": ("model.connector.",)},
    "qwen2-vl": {"vision": ("model.visual.blocks.", "model.visual.patch_embed."),
                 "projector": ("model.visual.merger.",)},
    "llava-next": {"vision": ("model.vision_tower.",), "projector": ("model.multi_modal_projector.",)},
    "mllama": {"vision": ("model.vision_model.",), "projector": ("model.multi_modal_projector.",)},
}
GROUP_PREFIXES["qwen2.5-vl"] = GROUP_PREFIXES["qwen2-vl"]


def _resolve(ref: str) -> str:
    """Model references are resolved at the edge; the library receives paths."""
    from pipelines.refs import resolve_model

    return resolve_model(ref)


def expected_group(family: str, name: str) -> str:
    for group, prefixes in GROUP_PREFIXES[family].items():
        if name.startswith(prefixes):
            return group
    return "language"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("families")
    rows = [{"id": f"ex{i}", "images": [Image.new("RGB", (32 + 16 * (i % 2), 32), COLORS[i % 3])],
             "messages": messages([("What color is it?", ANSWERS(i)[0]), ("And then?", ANSWERS(i)[1])])}
            for i in range(6)]
    write_dataset(str(d / "part-0.parquet"), rows)
    return d


def path_of(family: str) -> str:
    from pipelines.refs import resolve_model

    return resolve_model(f"tiny://{family}")


def processor_of(family: str):
    from pipelines.core.processors import load_processor

    return load_processor(path_of(family))


def cfg_for(family: str, **kw) -> TrainConfig:
    base = dict(model=_resolve(f"tiny://{family}"), batch_size=3, learning_rate=1e-3, warmup_ratio=0.0, max_length=512,
                use_gpu=False, save_every_steps=100, epochs=1, seed=0)
    return TrainConfig(**{**base, **kw})


def runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    """Maximal [start, end) runs of True."""
    out, start = [], None
    for i, v in enumerate(mask.tolist() + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append((start, i))
            start = None
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_assistant_only_labels_match_the_chat_template(family):
    with cell(family, "sft_labels", "test_families"):
        proc = processor_of(family)
        answers = ANSWERS(0)
        msgs = clean_messages(messages([("What color is it?", answers[0]), ("And then?", answers[1])]))
        ex = encode_example(proc, msgs, [Image.new("RGB", (48, 32), "red")], EncodeOptions(max_length=512))
        ids, labels = ex["input_ids"], ex["labels"]
        trained = labels != -100
        assert torch.equal(labels[trained], ids[trained])
        pre, post = TURN[family]
        spans = [proc.tokenizer.decode(ids[s:e]) for s, e in runs(trained)]
        assert spans == [pre + a + post for a in answers]
        # the untrained rest is exactly the prompt side of the template: user turns, headers, image tokens
        full = proc.apply_chat_template(msgs, tokenize=False)
        n_image = int((ids == proc.tokenizer.convert_tokens_to_ids(proc.image_token)).sum())
        assert n_image > 1 or family == "mllama"
        assert full.endswith(pre + answers[1] + post)


@pytest.mark.parametrize("family", FAMILIES)
def test_sft_trains_saves_and_reloads(family, data_dir, tmp_path):
    from transformers import AutoModelForImageTextToText

    from posttrain.train import train

    with cell(family, "sft_train", "test_families"):
        out = tmp_path / "run"
        metrics = train(cfg_for(family), data_dir, out)
        assert metrics["step"] == 2 and metrics["examples"] == 6 and metrics["skipped"] == {}
        losses = [json.loads(ln)["loss"] for ln in (out / "metrics.jsonl").read_text().splitlines()]
        assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
        base = AutoModelForImageTextToText.from_pretrained(path_of(family))
        tuned = AutoModelForImageTextToText.from_pretrained(out)
        assert type(tuned) is type(base)
        changed = [n for (n, a), b in zip(base.named_parameters(), tuned.parameters(), strict=True)
                   if not torch.equal(a, b)]
        assert changed, "training changed no weight"
        from pipelines.core.processors import load_processor

        again = load_processor(out)
        assert again.chat_template == processor_of(family).chat_template
        assert type(again).__name__ == type(processor_of(family)).__name__


@pytest.mark.parametrize("family", FAMILIES)
def test_module_groups_learning_rates_and_freezing(family, data_dir, tmp_path):
    from posttrain.optim import data_files_in, module_group
    from posttrain.sft import SFTRecipe

    with cell(family, "module_groups", "test_families"):
        cfg = cfg_for(family, freeze_vision=True, lr_projector=2e-3, lr_language=5e-4)
        recipe = SFTRecipe(cfg, data_files_in(data_dir), tmp_path / "run")
        recipe.setup()
        names = [n for n, _ in recipe.module.named_parameters()]
        assert [module_group(n) for n in names] == [expected_group(family, n) for n in names]
        assert {expected_group(family, n) for n in names} == {"vision", "projector", "language"}
        trainable = set(recipe.trainable_names)
        assert trainable == {n for n in names if expected_group(family, n) != "vision"}
        lrs = {g["name"]: g["lr"] for g in recipe.optimizer.param_groups}
        assert {"projector", "language"} <= set(lrs)  # no vision group: it is frozen
        assert all(lr == {"projector": 2e-3, "language": 5e-4}[name.removesuffix("_nd")] for name, lr in lrs.items())
        batch = next(iter(recipe._loader()))
        recipe.compute_loss(batch).backward()
        grads = {n: p.grad for n, p in recipe.module.named_parameters()}
        assert all(grads[n] is None for n in names if expected_group(family, n) == "vision")
        for group in ("projector", "language"):
            assert any(grads[n] is not None and grads[n].abs().sum() > 0
                       for n in names if expected_group(family, n) == group)


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_trains_adapters_and_saves_merged_model(family, data_dir, tmp_path):
    from transformers import AutoModelForImageTextToText

    from posttrain.optim import data_files_in, module_group
    from posttrain.sft import SFTRecipe

    with cell(family, "lora", "test_families"):
        cfg = cfg_for(family, lora={"enabled": True, "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})
        recipe = SFTRecipe(cfg, data_files_in(data_dir), tmp_path / "run")
        recipe.setup()
        assert recipe.trainable_names and all("lora_" in n for n in recipe.trainable_names)
        assert any(module_group(n) == "language" for n in recipe.trainable_names)
        recipe.train()
        assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
        merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "run")
        assert not any("lora_" in n for n, _ in merged.named_parameters())


def _mrope_expected(ids: list[int], image_id: int, grid: tuple[int, int, int], merge: int = 2) -> torch.Tensor:
    """M-RoPE ids by the Qwen2-VL paper's rule (Sec. 2.1): text tokens share one running index on all three axes;
    the image's tokens take (start, start + row, start + col) over its merged grid; text after the image continues
    from the largest id used + 1. One image per sequence here."""
    t, h, w = grid[0], grid[1] // merge, grid[2] // merge
    first = ids.index(image_id)
    out = [[i, i, i] for i in range(first)]
    out += [[first + ti, first + r, first + c] for ti in range(t) for r in range(h) for c in range(w)]
    nxt = max(max(p) for p in out) + 1
    out += [[nxt + k] * 3 for k in range(len(ids) - first - t * h * w)]
    return torch.tensor(out).T  # (3, L)


@pytest.mark.parametrize("family", FAMILIES)
def test_momentum_proxy_placeholders_positions_and_training(family, data_dir, tmp_path):
    from posttrain.momentum_proxy import MomentumProxyRecipe
    from posttrain.positions import rope_position_ids
    from posttrain.optim import data_files_in
    from posttrain.train import train

    with cell(family, "momentum_proxy", "test_families"):
        cfg = cfg_for(family, method="momentum_proxy", momentum_proxy={"num_tokens": 3, "warmup_steps": 1})
        recipe = MomentumProxyRecipe(cfg, data_files_in(data_dir), tmp_path / "probe")
        recipe.setup()
        recipe.before_step()
        batch = next(iter(recipe._loader()))
        ids, mask = batch["input_ids"], batch["attention_mask"]
        # N placeholders per user turn (2 user turns), all inside the prompt side (never trained)
        placeholder = (ids == recipe.placeholder_id) & (mask == 1)
        assert placeholder.sum(1).tolist() == [3 * 2] * ids.shape[0]
        assert (batch["labels"][placeholder] == -100).all()
        # with the proxy set to the placeholder's own embedding, the inputs_embeds path must be the model's
        # own forward (same positions: for M-RoPE models this needs the 3-D ids passed explicitly)
        emb = recipe.module.get_input_embeddings().weight[recipe.placeholder_id].detach()
        with torch.no_grad():
            recipe.proxy.proxy.copy_(emb.expand_as(recipe.proxy.proxy))
            recipe.proxy.ema.copy_(recipe.proxy.proxy)
            got = recipe.compute_loss(batch)  # first: a model forward would cache M-RoPE deltas it could reuse
            ref = recipe.model(**recipe.model_inputs(batch)).loss
        # tight: on a random tiny model wrong positions move the loss by only ~1e-4
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
        positions = rope_position_ids(recipe.module, recipe.model_inputs(batch))
        if family.startswith("qwen"):
            first = batch["attention_mask"][0].bool()
            grid = tuple(batch["image_grid_thw"][0].tolist())
            expected = _mrope_expected(ids[0][first].tolist(), recipe.module.config.image_token_id, grid)
            assert torch.equal(positions[:, 0][:, first], expected)
        else:
            assert positions is None
        metrics = train(cfg, data_dir, tmp_path / "run")
        assert metrics["step"] == 2 and (tmp_path / "run" / "momentum_proxy.pt").is_file()


def _vitask_batch(family: str, tsm, n: int = 3):
    from posttrain.vitask_data import VITaskCollator, VITaskDataset, pad_token_id

    rows = [{"id": f"r{i}", "images": [{"bytes": _png(Image.new("RGB", (32 + 16 * (i % 2), 32), COLORS[i % 3])),
                                        "path": None}],
             "messages": messages([("What color is it?", ANSWERS(i)[0])])} for i in range(n)]
    proc = processor_of(family)
    ds = VITaskDataset(rows, proc, EncodeOptions(max_length=512))
    return VITaskCollator(pad_token_id(proc), tsm)([ds[i] for i in range(len(ds))])


def _png(im: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("family", FAMILIES)
def test_vitask_add_connector_both_stages(family, data_dir, tmp_path, tsm):
    from transformers import AutoModelForImageTextToText

    from posttrain import vitask
    from posttrain.vitask_objective import forward_logits

    cfg = cfg_for(family, method="vitask", vitask={"tsm": _resolve("tiny://tsm"), "connector": "add", "stage1_epochs": 0.25, "stage2_epochs": 0.25})
    with cell(family, "vitask", "test_families") as rec:
        if family == "mllama":
            # images enter through cross-attention: no image-token features to add an exemplar to -> refused
            with pytest.raises(NotImplementedError, match="cross-attention") as err:
                vitask.train(cfg, data_dir, tmp_path / "run")
            metrics = tmp_path / "run" / "metrics.jsonl"
            assert not metrics.exists() or metrics.read_text() == ""  # refused before any step
            rec.update(status="refused", detail=str(err.value))
            return
        # the inputs_embeds path (image features scattered by hand, positions passed) is the model's own forward
        model = AutoModelForImageTextToText.from_pretrained(path_of(family)).eval()
        batch = _vitask_batch(family, tsm).positive
        with torch.no_grad():
            torch.testing.assert_close(forward_logits(model, batch), model(**batch.model_inputs()).logits,
                                       rtol=1e-4, atol=1e-4)
        summary = vitask.train(cfg, data_dir, tmp_path / "run")
        assert summary["steps"] == {"stage1": 1, "stage2": 1}
        assert {"van", "ep", "rda"} <= set(summary["final"]["stage1"]) and "crt" in summary["final"]["stage2"]
        assert summary["crt"]["samples_used"] > 0
        assert (tmp_path / "run" / "vitask_connector.safetensors").is_file()
        AutoModelForImageTextToText.from_pretrained(tmp_path / "run")


@pytest.mark.parametrize("family", FAMILIES)
def test_vitask_append_connector(family, tsm):
    from transformers import AutoModelForImageTextToText

    from posttrain.config import VITaskSettings
    from posttrain.vitask_objective import VITaskObjective

    with cell(family, "vitask_append", "test_families") as rec:
        model = AutoModelForImageTextToText.from_pretrained(path_of(family))
        batch = _vitask_batch(family, tsm)
        settings = VITaskSettings(connector="append", connector_tokens=2)
        obj = VITaskObjective(tsm, model.get_input_embeddings().embedding_dim, settings)
        if family != "vlm" and family != "llava-next":
            with pytest.raises(NotImplementedError, match="M-RoPE|cross-attention") as err:
                obj(model, batch.positive, stage=1)
            rec.update(status="refused", detail=str(err.value))
            return
        out = obj(model, batch.positive, stage=2, negative=batch.negative, negative_rows=batch.negative_rows)
        out.total.backward()
        assert obj.connector.mlp[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_evaluation_generates_through_the_chat_template(family):
    from posttrain.eval.runner import chat_renderer
    from pipelines.core.resources import EngineResources
    from pipelines.core.engines import GenRequest, SamplingSettings, make_engine

    with cell(family, "eval_generate", "test_families"):
        engine = make_engine(path_of(family), EngineResources(engine="transformers", device="cpu", dtype="float32"),
                             sampling=SamplingSettings(max_tokens=4), multimodal=True, max_model_len=512)
        prompt = chat_renderer(engine.processor)("What color is it?")
        req = GenRequest(prompt=prompt, images=[Image.new("RGB", (48, 32), "red")])
        (res,) = engine.generate([req])
        assert res.n_prompt_tokens == engine.count_prompt_tokens(req)
        assert 1 <= res.n_output_tokens <= 4 and res.finish_reason in ("stop", "length")
        tok = engine.tokenizer
        n_text = len(tok(prompt)["input_ids"])  # the tokenizer's own special tokens included, as the engine does
        n_image = int((engine.processor(text=[prompt], images=[[req.images[0]]], return_tensors="pt")["input_ids"][0]
                       == tok.convert_tokens_to_ids(engine.processor.image_token)).sum())
        # one placeholder in the text became n_image tokens (Mllama keeps its single <|image|>); Idefics3 also wraps
        # them in <fake_token_around_image><global-img> ... <fake_token_around_image> (pipelines/fixtures/tiny.py)
        assert res.n_prompt_tokens == n_text - 1 + n_image + (3 if family == "vlm" else 0)
        engine.close()


def test_synthesis_with_the_llava_llama3_preset_on_llava_next():
    """The published synthesizer's family: the preset's literal LLaVA-Llama-3 prompt (bigai-ai/QA-Synthesizer
    vllm_inference/utils/task.py syn_task_triplet + conv_llava_llama_3) with its image token
    <|reserved_special_token_4|>, counted with the image expanded, then generated."""
    from pipelines.core.resources import EngineResources
    from pipelines.core.engines import GenRequest, SamplingSettings, make_engine
    from synth.prompt import load_preset, render_prompt
    from tests.pipelines.fixtures.test_families import _llava_next_tokens

    with cell("llava-next", "synth", "test_families"):
        preset = load_preset("llava_llama3")
        sampling = SamplingSettings(max_tokens=6, stop=list(preset.stop),
                                    skip_special_tokens=preset.skip_special_tokens)
        engine = make_engine(path_of("llava-next"), EngineResources(engine="transformers", device="cpu",
                                                                     dtype="float32"),
                             sampling=sampling, multimodal=True, max_model_len=1024)
        prompt = render_prompt(preset, "A red blood cell.")
        assert prompt.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>")
        assert prompt.count(preset.image_token) == 1
        req = GenRequest(prompt=prompt, images=[Image.new("RGB", (32, 32), "red")])
        tok = engine.tokenizer
        ids = tok(prompt)["input_ids"]
        # the tokenizer prepends its own <|begin_of_text|> before the preset's: two BOS, as upstream runs it
        assert ids[:2] == [tok.bos_token_id, tok.bos_token_id]
        n = engine.count_prompt_tokens(req)
        assert n == len(ids) - 1 + _llava_next_tokens(32, 32, (1, 1))
        (res,) = engine.generate([req])
        assert res.n_prompt_tokens == n and res.n_output_tokens >= 1
        engine.close()
        # the whole synth stage on rows: tasks or unparseable rejects with the text kept, a too-long caption
        # rejected as too_long (never truncated)
        from pipelines.config import load_config
        from synth.stage import SynthStage
        from tests.synth.test_stage import _check_tiny, _run, _tiny_rows

        cfg = load_config("biomed", "tiny", ["synth.engine=transformers", f"synth.model={_resolve('tiny://llava-next')}",
                                             "synth.preset=llava_llama3", "synth.max_tokens=16",
                                             "synth.max_model_len=256"])
        _check_tiny(_run(SynthStage(cfg.synth, cfg.input.max_image_pixels), _tiny_rows()), 16)


@pytest.mark.parametrize("family", ["qwen2-vl", "mllama"])
def test_truncating_the_final_turn_cuts_sequence_aligned_tensors_too(family):
    """mm_token_type_ids (Qwen2-VL M-RoPE) and cross_attention_mask (Mllama) run along the tokens: a text-only cut
    of the final assistant turn must cut them at the same length, or positions and masks desynchronise."""
    proc = processor_of(family)
    msgs = clean_messages(messages([("What color is it?", "red " * 60)]))
    full = encode_example(proc, msgs, [Image.new("RGB", (32, 32))], EncodeOptions(max_length=512))
    cut = encode_example(proc, msgs, [Image.new("RGB", (32, 32))],
                         EncodeOptions(max_length=len(full["input_ids"]) - 20, truncate_final_turn=True))
    key = "mm_token_type_ids" if family == "qwen2-vl" else "cross_attention_mask"
    assert full[key].shape[1] == len(full["input_ids"])
    assert cut[key].shape[1] == len(cut["input_ids"]) == len(full["input_ids"]) - 20
    assert torch.equal(cut[key], full[key][:, : len(cut["input_ids"])])
