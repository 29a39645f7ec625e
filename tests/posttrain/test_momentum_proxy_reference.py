"""Momentum proxy against the reference code `myeongkyunkang/InstFree`.

References (re-implemented in a few lines here, never by calling the code under test):
- response shuffling: `torchtune/datasets/multimodal/_the_cauldron.py`, `_SFTDataset.__getitem__`
  (`[w.strip() for w in text.strip().split(',')]`, `random.shuffle`, `', '.join`);
- warm-up / EMA: `recipes/full_finetune_single_device.py`: the warm-up run's optimizer holds only the proxy;
  the momentum copy starts from the loaded (warmed-up) proxy; before each forward
  `proxy_instruction.weight.copy_(proxy_instruction_momentum)`; the optimizer steps; then
  `momentum = m * momentum + (1 - m) * weight`.
"""

from __future__ import annotations

import json
import random

import pytest
import torch

from posttrain.config import TrainConfig
from posttrain.momentum_proxy import MomentumProxyRecipe, shuffle_segments
from tests.posttrain.test_momentum_proxy import make_data


def _reference_shuffle(text: str, rng: random.Random) -> str:
    word_list = [word.strip() for word in text.strip().split(",")]
    rng.shuffle(word_list)
    return ", ".join(word_list)


@pytest.mark.parametrize("text", ["red, blue, green, white", "a,b,c,d,e", "  x , y,z  ", "one, two,", "single"])
def test_shuffle_matches_reference(text):
    """InstFree `_the_cauldron.py` (response_shuffling='comma'), with the same seeded RNG as ours."""
    for seed in ("0:0:r1", "0:1:r1", "7:3:abc"):
        assert shuffle_segments(text, ",", seed) == _reference_shuffle(text, random.Random(seed))


def test_shuffle_rejoins_with_comma_space_even_without_spaces():
    """Reference joins with ', ' whatever the input spacing (hand-checked: 3 segments, all kept)."""
    out = shuffle_segments("a,b,c", ",", 1)
    assert sorted(out.split(", ")) == ["a", "b", "c"] and "," not in out.replace(", ", "")


class _Adam:
    """torch AdamW's update for one tensor, weight decay 0 (Loshchilov & Hutter; torch.optim.AdamW docs)."""

    def __init__(self, lr: float, betas=(0.9, 0.999), eps=1e-8):
        self.lr, (self.b1, self.b2), self.eps, self.t, self.m, self.v = lr, betas, eps, 0, 0.0, 0.0

    def step(self, g: torch.Tensor) -> torch.Tensor:
        """The unconstrained update (delta) a parameter with gradient g would take."""
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        m_hat, v_hat = self.m / (1 - self.b1 ** self.t), self.v / (1 - self.b2 ** self.t)
        return -self.lr * m_hat / (v_hat.sqrt() + self.eps)


@pytest.fixture
def recipe(tiny_vlm_path, tmp_path):
    files = make_data(tmp_path / "d.parquet")  # 16 examples, batch 4: 4 steps per epoch
    cfg = TrainConfig(model=tiny_vlm_path, batch_size=4, learning_rate=1e-3, warmup_ratio=0.0, epochs=1,
                      lr_scheduler="constant", use_gpu=False, save_every_steps=100,
                      momentum_proxy={"num_tokens": 4, "warmup_epochs": 0.5, "momentum": 0.9, "learning_rate": 5e-3})
    r = MomentumProxyRecipe(cfg, files, tmp_path / "out")
    r.setup()
    return r


def _record_forwards(r: MomentumProxyRecipe):
    """What the model sees at the placeholder positions on every forward, [N, D] per call (via the recipe's
    own collator and the module's forward pre-hook)."""
    ids, seen = [], []
    collate = r.collator

    def recording_collator(examples):
        batch = collate(examples)
        ids.append((batch["input_ids"], batch["attention_mask"]))
        return batch

    def hook(_module, _args, kwargs):
        input_ids, attention = ids[len(seen)]
        mask = (input_ids == r.placeholder_id) & (attention == 1)
        row = int(mask.any(1).nonzero()[0])
        seen.append(kwargs["inputs_embeds"][row, mask[row]].detach().clone())

    r.collator = recording_collator
    r.module.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def test_warmup_then_momentum_steps_follow_the_reference(recipe):
    """InstFree `recipes/full_finetune_single_device.py`: warm-up trains only the proxy; the EMA starts from
    the warmed-up proxy; each phase-2 forward sees the EMA; after the step ema += (1-m) * (unconstrained step)."""
    r, m, lr = recipe, 0.9, 5e-3
    seen = _record_forwards(r)
    grads: list[torch.Tensor] = []
    r.proxy.proxy.register_hook(lambda g: grads.append(g.detach().clone()))
    model0 = {n: p.detach().clone() for n, p in r.module.named_parameters()}
    init = r.proxy.proxy.detach().clone()

    # Phase 1: 0.5 epoch of 4 batches = 2 steps, proxy only, live proxy in the forward.
    assert r.warm_up() == 2
    assert all(torch.equal(model0[n], p) for n, p in r.module.named_parameters())
    assert torch.equal(seen[0], init)
    warm_adam = _Adam(lr)
    expected = init + warm_adam.step(grads[0])
    torch.testing.assert_close(seen[1], expected, rtol=1e-5, atol=1e-7)
    warmed = expected + warm_adam.step(grads[1])
    torch.testing.assert_close(r.proxy.proxy.detach(), warmed, rtol=1e-5, atol=1e-7)
    assert torch.equal(r.proxy.ema, r.proxy.proxy.detach())  # the EMA starts from the warmed-up proxy
    assert len((r.out_dir / "warmup_metrics.jsonl").read_text().splitlines()) == 2

    # Phase 2: 3 steps; a fresh optimizer (the reference's main run builds a new one).
    r.stop_after_steps = 3
    r.train()
    phase2_seen, phase2_grads = seen[2:], grads[2:]
    assert len(phase2_seen) == len(phase2_grads) == 3
    adam, ema = _Adam(lr), warmed.clone()
    torch.testing.assert_close(phase2_seen[0], warmed, rtol=1e-6, atol=1e-8)  # first forward: warmed-up proxy
    observed = phase2_seen + [r.proxy.ema.clone()]  # the EMA at the start of each step, then at the end
    for t in range(3):
        torch.testing.assert_close(observed[t], ema, rtol=1e-5, atol=1e-7)  # live proxy reset to the EMA
        unconstrained = adam.step(phase2_grads[t])  # where the live proxy alone would go
        ema = m * ema + (1 - m) * (ema + unconstrained)  # reference: m * momentum + (1 - m) * stepped weight
        # the proxy moves by (1 - m) times the unconstrained step
        torch.testing.assert_close(observed[t + 1] - observed[t], (1 - m) * unconstrained, rtol=1e-3, atol=1e-7)
    torch.testing.assert_close(r.proxy.ema, ema, rtol=1e-5, atol=1e-7)
    assert any(not torch.equal(model0[n], p) for n, p in r.module.named_parameters())


def test_resumed_phase2_does_not_warm_up_again(recipe):
    """The warm-up is its own phase: once `warmed_up` is checkpointed, a resumed run goes straight to phase 2."""
    r = recipe
    r.cfg.save_every_steps = 1
    r.stop_after_steps = 1
    r.train()
    ckpt = torch.load(r.out_dir / "checkpoints" / "step-0000001" / "method.pt", weights_only=True)
    assert bool(ckpt["proxy"]["warmed_up"])
    again = MomentumProxyRecipe(r.cfg, r.data_files, r.out_dir)
    again.setup()
    assert bool(again.proxy.warmed_up) and again.step == 1
    again.train()
    lines = (r.out_dir / "warmup_metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["warmup_step"] for x in lines] == [1, 2]  # written once, not by the resumed run
