"""Parser properties: recovers exactly the complete pairs, never crashes, never invents a pair."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synth.parse import normalize, parse_output
from synth.prompt import load_preset, render_continuation, render_turn

PRESETS = [load_preset("llava_llama3"), load_preset("tiny")]

# Text that cannot contain a role marker or separator of either preset.
_ALPHABET = "abcdefghij klmnopqrstuvwxyz0123456789?.,"
words = st.text(alphabet=_ALPHABET, min_size=1, max_size=30).filter(lambda s: s.strip())


def test_upstream_example_llava_llama3():
    """Output in the format parsed by QA-Synthesizer's syn_utils.parse_pred, with a cut-off tail."""
    out = (
        "Answer with a precise response.\nWhat color is the cat?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nBlack<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n"
        "Answer with an informative response.\nWhat color is the cat?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nThe cat in the picture is black.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n"
        "Answer with a precise response.\nHow many legs<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nFo"
    )
    r = parse_output(out, PRESETS[0])
    assert r.triplets == [
        {"instruction": "What color is the cat?", "precise": "Black", "informative": "The cat in the picture is black."}
    ]
    assert r.truncated and not r.unparseable and r.unpaired == []


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_unpaired_reported_and_garbage_unparseable(preset):
    out = render_continuation(preset, [("precise", "Q one?", "a"), ("precise", "Q two?", "b")])
    r = parse_output(out, preset)
    assert r.unparseable and r.triplets == []
    assert [u["instruction"] for u in r.unpaired] == ["Q one?", "Q two?"]
    for junk in ["", "hello world", "<|eot_id|><|eot_id|>", "User: Assistant:", "\x00\ufffd" * 5]:
        assert parse_output(junk, preset).unparseable


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_finished_flag_accepts_missing_final_separator(preset):
    full = render_continuation(preset, [("informative", "Why?", "Because."), ("precise", "Why?", "So.")])
    bare = full[: full.rindex(preset.assistant_end.strip())]
    assert parse_output(bare, preset).unparseable  # cut off by max_tokens: last turn dropped
    assert parse_output(bare, preset, finished=True).triplets == [
        {"instruction": "Why?", "precise": "So.", "informative": "Because."}
    ]


@st.composite
def outputs(draw):
    """A rendered synthesizer output, the triplets whose two turns are complete in it, and the preset."""
    preset = draw(st.sampled_from(PRESETS))
    qs = draw(st.lists(words, min_size=1, max_size=5, unique_by=normalize))
    rnd = random.Random(draw(st.integers(0, 2**32)))
    triplets = {normalize(q): {"instruction": q.strip(), "precise": draw(words).strip(),
                               "informative": draw(words).strip()} for q in qs}
    turns = []
    for key, t in triplets.items():
        # The second asking of a question may differ in whitespace only.
        q2 = "  " + t["instruction"].replace(" ", " \n ") if rnd.random() < 0.5 else t["instruction"]
        pair = [("precise", t["instruction"], t["precise"]), ("informative", q2, t["informative"])]
        rnd.shuffle(pair)  # hint order varies
        turns.extend((key, *p) for p in pair)
    rnd.shuffle(turns)
    pieces: list[tuple[str | None, str]] = []
    for key, kind, q, a in turns:
        if rnd.random() < 0.3:  # garbage turn between real ones
            pieces.append((None, draw(words)))
        pieces.append((key, render_turn(preset, kind, q, a)))
    text, ends = "", []
    for i, (key, piece) in enumerate(pieces):
        if i:
            text += preset.user_start
        text += piece
        # A turn is complete once its end marker is; trailing whitespace of the separator may be cut.
        slack = len(preset.assistant_end) - len(preset.assistant_end.rstrip())
        ends.append((key, len(text) - slack))
    cut = draw(st.integers(0, len(text)))
    truncated = text[:cut]
    seen: dict[str, int] = {}
    for key, end in ends:
        if key is not None and end <= cut:
            seen[key] = seen.get(key, 0) + 1
    expected = [triplets[k] for k in triplets if seen.get(k) == 2]
    return preset, truncated, expected, triplets


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(outputs())
def test_recovers_exactly_the_complete_pairs(case):
    preset, text, expected, all_triplets = case
    r = parse_output(text, preset)
    key = lambda t: normalize(t["instruction"])  # noqa: E731
    canon = lambda ts: sorted(({**t, "instruction": key(t)} for t in ts), key=key)  # noqa: E731
    assert canon(r.triplets) == canon(expected)
    for t in r.triplets:  # never invents: every triplet is one that was rendered
        assert canon([all_triplets[key(t)]]) == canon([t])
    assert r.unparseable == (not expected)
    paired = {key(t) for t in r.triplets}
    assert all(normalize(u["instruction"]) not in paired for u in r.unpaired)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400), st.sampled_from(PRESETS), st.booleans())
def test_arbitrary_text_never_crashes(text, preset, finished):
    r = parse_output(text, preset, finished=finished)
    assert r.unparseable == (r.triplets == [])
    for t in r.triplets:
        assert set(t) == {"instruction", "precise", "informative"} and all(t.values())
