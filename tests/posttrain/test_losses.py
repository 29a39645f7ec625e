"""Loss math against values worked out by hand on tiny tensors (V = 2 keeps the arithmetic readable)."""

from __future__ import annotations

import math

import pytest
import torch

from posttrain.losses import LOSSES, combine, crt, next_token_ce, rda_kl

LN2, LN3 = math.log(2.0), math.log(3.0)


def _t(x):
    return torch.tensor(x, dtype=torch.float32)


# One sample, T = 3, V = 2. Logits at t predict labels[t + 1]; the last position predicts nothing.
LOGITS = _t([[[0.0, 0.0], [LN3, 0.0], [100.0, -100.0]]])
LABELS = torch.tensor([[-100, 0, 1]])


def test_next_token_ce_hand_value():
    # t=0 -> target 0 under softmax(0,0):   -ln(1/2) = ln 2
    # t=1 -> target 1 under softmax(ln3,0): p1 = 1/(3+1) -> -ln(1/4) = 2 ln 2
    # mean over the two response tokens: 1.5 ln 2
    got = next_token_ce(LOGITS, LABELS)
    assert got.item() == pytest.approx(1.5 * LN2, rel=1e-6)


def test_next_token_ce_ignore_index_masks_tokens():
    labels = torch.tensor([[-100, 0, -100]])  # only t=0 -> target 0 remains: ln 2
    assert next_token_ce(LOGITS, labels).item() == pytest.approx(LN2, rel=1e-6)
    # A custom ignore_index: -100 is now an ordinary (out of range) id, so use -1 throughout.
    labels = torch.tensor([[-1, -1, 1]])  # only t=1 -> target 1: 2 ln 2
    assert next_token_ce(LOGITS, labels, ignore_index=-1).item() == pytest.approx(2 * LN2, rel=1e-6)


def test_next_token_ce_no_valid_token_is_zero_not_nan():
    logits = LOGITS.clone().requires_grad_(True)
    loss = next_token_ce(logits, torch.full((1, 3), -100))
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph
    assert torch.count_nonzero(logits.grad) == 0


def test_next_token_ce_mismatched_shapes_raise():
    with pytest.raises(ValueError):
        next_token_ce(LOGITS, torch.tensor([[0, 1]]))


def test_rda_kl_reverse_variant_hand_value_and_direction():
    # The reverse variant (train.vitask.rda_direction=reverse); the paper's forward KL is pinned in
    # tests/posttrain/test_vitask_reference.py.
    # One response token (t=0 -> labels[1]). Student p = softmax(0,0) = (1/2, 1/2);
    # teacher q = softmax(ln3, 0) = (3/4, 1/4).
    # KL(p || q) = 1/2 ln((1/2)/(3/4)) + 1/2 ln((1/2)/(1/4)) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3) ~ 0.1438
    # (the other direction KL(q || p) = 3/4 ln(3/2) + 1/4 ln(1/2) ~ 0.1308 must NOT come out)
    student = _t([[[0.0, 0.0], [9.0, 9.0]]])
    teacher = _t([[[LN3, 0.0], [-9.0, 9.0]]])
    labels = torch.tensor([[-100, 1]])
    got = rda_kl(student, teacher, labels, direction="reverse").item()
    assert got == pytest.approx(0.5 * math.log(4 / 3), rel=1e-5)
    assert got != pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-3)


def test_rda_kl_masks_ignored_positions():
    # Position t=1 has a very different teacher but its target is ignored: only t=0 counts.
    student = _t([[[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    teacher = _t([[[LN3, 0.0], [50.0, -50.0], [0.0, 0.0]]])
    assert rda_kl(student, teacher, torch.tensor([[-100, 1, -100]]), direction="reverse").item() == pytest.approx(
        0.5 * math.log(4 / 3), rel=1e-5
    )


def test_rda_kl_teacher_gets_no_gradient():
    student = torch.randn(2, 4, 5, requires_grad=True)
    teacher = torch.randn(2, 4, 5, requires_grad=True)
    labels = torch.tensor([[-100, 1, 2, 3], [-100, -100, 4, 0]])
    rda_kl(student, teacher, labels).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_rda_kl_zero_when_distributions_match():
    x = torch.randn(1, 3, 4)
    assert rda_kl(x, x + 7.0, torch.tensor([[-100, 1, 2]])).item() == pytest.approx(0.0, abs=1e-6)


def test_crt_binary_logit_hand_value_and_negatives_counted():
    # Sample 0 has a negative. Targets: labels[1] = 1 (scored at t=0), labels[2] = 0 (scored at t=1).
    #   t=0: s+ = logits[0,0,1] = 2, s- = neg[0,0,1] = 0 -> softplus(0 - 2) = ln(1 + e^-2)
    #   t=1: s+ = logits[0,1,0] = 0, s- = neg[0,1,0] = 1 -> softplus(1 - 0) = ln(1 + e)
    #   sample loss = mean of the two.
    # Sample 1 has no negative: masked out (its huge values must not matter) and counted.
    logits = _t([[[0.0, 2.0], [0.0, 5.0], [0.0, 0.0]], [[0.0, -50.0], [0.0, 0.0], [0.0, 0.0]]])
    neg = _t([[[0.0, 0.0], [1.0, 5.0], [0.0, 0.0]], [[0.0, 50.0], [0.0, 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[-100, 1, 0], [-100, 1, -100]])
    out = crt(logits, neg, labels, torch.tensor([True, False]), form="binary")
    want = (math.log1p(math.exp(-2.0)) + math.log1p(math.e)) / 2
    assert out.loss.item() == pytest.approx(want, rel=1e-6)
    assert (out.n_used, out.n_without_negative, out.n_without_tokens, out.n_tokens) == (1, 1, 0, 2)


def test_crt_mean_over_samples_not_tokens():
    # Sample 0: one token, s+ = s- = 0 -> ln 2. Sample 1: two tokens, s- - s+ = ln 3 each -> ln(1+3) = 2 ln 2.
    # Mean over samples: (ln2 + 2ln2)/2 = 1.5 ln 2 (a token mean would give (ln2 + 4ln2)/3).
    logits = torch.zeros(2, 3, 2)
    neg = torch.zeros(2, 3, 2)
    neg[1, 0, 1] = LN3
    neg[1, 1, 1] = LN3
    labels = torch.tensor([[-100, 1, -100], [-100, 1, 1]])
    out = crt(logits, neg, labels, torch.tensor([True, True]), form="binary")
    assert out.loss.item() == pytest.approx(1.5 * LN2, rel=1e-6)
    assert out.n_used == 2 and out.n_tokens == 3


def test_crt_logprob_score_hand_value_and_shift_invariance():
    # Own image: log p(1) = ln(3/4) (logits (0, ln3)); negative: log p(1) = ln(1/2) (logits (0, 0)).
    # softplus(ln(1/2) - ln(3/4)) = ln(1 + 2/3) = ln(5/3).
    logits = _t([[[0.0, LN3], [0.0, 0.0]]])
    neg = _t([[[0.0, 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[-100, 1]])
    has = torch.tensor([True])
    got = crt(logits, neg, labels, has, form="binary", score="logprob").loss.item()
    assert got == pytest.approx(math.log(5 / 3), rel=1e-6)
    assert crt(logits, neg + 4.0, labels, has, form="binary", score="logprob").loss.item() == pytest.approx(got, rel=1e-6)
    # Raw logits are not shift invariant: s+ = ln3, s- = 0 + 4.
    assert crt(logits, neg + 4.0, labels, has, form="binary").loss.item() == pytest.approx(math.log1p(math.exp(4 - LN3)), rel=1e-6)


def test_crt_without_any_negative_is_zero_and_counts_all():
    logits = torch.randn(3, 4, 5, requires_grad=True)
    labels = torch.tensor([[-100, 1, 2, 3]] * 3)
    out = crt(logits, torch.randn(3, 4, 5), labels, torch.tensor([False, False, False]))
    assert out.loss.item() == 0.0 and out.n_used == 0 and out.n_without_negative == 3
    out.loss.backward()


def test_crt_negative_without_response_tokens_is_counted():
    labels = torch.tensor([[-100, 1, 2], [-100, -100, -100]])
    out = crt(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), labels, torch.tensor([True, True]))
    assert (out.n_used, out.n_without_negative, out.n_without_tokens) == (1, 0, 1)


def test_combine_weights_and_logs_every_component():
    comps = {"van": _t(2.0), "ep": _t(3.0), "rda": _t(5.0)}
    total, logged = combine(comps, {"van": 1.0, "ep": 0.5})
    assert total.item() == pytest.approx(2.0 + 1.5)
    assert logged == {"van": 2.0, "ep": 3.0, "rda": 5.0, "total": pytest.approx(3.5)}


def test_combine_unknown_weight_fails_loudly():
    with pytest.raises(KeyError):
        combine({"van": _t(1.0)}, {"van": 1.0, "crt": 1.0})


def test_registry_names():
    assert LOSSES["next_token_ce"] is next_token_ce
    assert LOSSES["rda_kl"] is rda_kl
    assert LOSSES["crt"] is crt
