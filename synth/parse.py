"""Parse synthesizer output into {instruction, precise, informative} triplets.

The output continues an opened user turn: `hint + sep + instruction + user_end + assistant_start +
answer + assistant_end`, turns joined by `user_start` (see synth/prompt.py). The same instruction is
asked once with the precise hint and once with the informative hint, in either order; those two turns
make one triplet (instructions match after whitespace normalisation). Never raises: a cut-off trailing
turn is dropped, malformed turns are counted, instructions seen with one hint only are returned as
`unpaired`, and output without any complete pair is `unparseable`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from synth.prompt import HintKind, Preset


@dataclass
class Turn:
    kind: HintKind
    instruction: str
    answer: str


@dataclass
class ParseResult:
    triplets: list[dict[str, str]] = field(default_factory=list)  # {instruction, precise, informative}
    unpaired: list[dict[str, str]] = field(default_factory=list)  # {instruction, hint, answer}
    n_turns: int = 0  # complete, well-formed instruction turns
    n_malformed: int = 0  # segments without a hint, role markers, question or answer
    truncated: bool = False  # the trailing turn was cut off (dropped)
    completed_at: list[int] = field(default_factory=list)  # per triplet: index of the turn completing its pair

    @property
    def unparseable(self) -> bool:
        return not self.triplets


def normalize(text: str) -> str:
    """Matching key for an instruction: whitespace runs collapsed."""
    return " ".join(text.split())


def split_turns(text: str, preset: Preset, *, finished: bool = False) -> tuple[list[Turn], int, bool]:
    """Complete turns in order, the number of malformed segments, and whether the last was cut off.

    `finished=True` means generation ended on EOS or a stop string (not max_tokens): a final turn that
    lacks only its end separator then counts as complete, since EOS may be that separator.
    """
    u_start = preset.user_start.strip()
    u_end = preset.user_end.strip()
    a_start = preset.assistant_start.strip()
    a_end = preset.assistant_end.strip()
    segments = text.split(u_start) if u_start else [text]
    turns: list[Turn] = []
    malformed = 0
    truncated = False
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if not seg.strip():
            continue
        q_end = seg.find(u_end)
        if q_end < 0:
            if last and not finished:
                truncated = True
            else:
                malformed += 1
            continue
        question = seg[:q_end]
        rest = seg[q_end + len(u_end) :].lstrip()
        if not rest.startswith(a_start):
            if last and not finished and a_start.startswith(rest):
                truncated = True  # cut inside the assistant role marker
            else:
                malformed += 1
            continue
        body = rest[len(a_start) :]
        a_stop = body.find(a_end)
        if a_stop < 0:
            if last and finished:
                answer = body
            elif last:
                truncated = True
                continue
            else:
                malformed += 1
                continue
        else:
            answer = body[:a_stop]
        turn = _hinted(question, answer.strip(), preset)
        if turn is None:
            malformed += 1
        else:
            turns.append(turn)
    return turns, malformed, truncated


def _hinted(question: str, answer: str, preset: Preset) -> Turn | None:
    q = question.strip()
    for kind in ("precise", "informative"):
        hint = preset.hint(kind)
        if q.startswith(hint):
            instruction = q[len(hint) :].strip()
            if instruction and answer:
                return Turn(kind, instruction, answer)
            return None
    return None


def parse_output(text: str, preset: Preset, *, finished: bool = False) -> ParseResult:
    """Pair precise and informative turns of the same instruction (first occurrence of each wins)."""
    turns, malformed, truncated = split_turns(text or "", preset, finished=finished)
    first: dict[str, dict[str, Turn]] = {}
    order: list[str] = []
    done: dict[str, int] = {}
    for n, t in enumerate(turns):
        key = normalize(t.instruction)
        if key not in first:
            first[key] = {}
            order.append(key)
        first[key].setdefault(t.kind, t)
        if len(first[key]) == 2 and key not in done:
            done[key] = n
    result = ParseResult(n_turns=len(turns), n_malformed=malformed, truncated=truncated)
    for key in order:
        got = first[key]
        if "precise" in got and "informative" in got:
            result.triplets.append(
                {
                    "instruction": next(iter(got.values())).instruction,  # as first written
                    "precise": got["precise"].answer,
                    "informative": got["informative"].answer,
                }
            )
            result.completed_at.append(done[key])
        else:
            (kind, t), = got.items()
            result.unpaired.append({"instruction": t.instruction, "hint": kind, "answer": t.answer})
    return result


def first_completed(result: ParseResult, n: int | None) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(kept, over): the `n` triplets whose pair completed first, in that order, and the rest. The AdaMLLM
    filter judges one per image, the first instruction seen with both hints (bigai-ai/QA-Synthesizer
    vllm_inference/utils/task.py `consistency_filter.get_prompt`); n=None keeps all, in parse order."""
    if n is None or len(result.triplets) <= n:
        return list(result.triplets), []
    rank = sorted(range(len(result.triplets)), key=lambda i: result.completed_at[i])
    return [result.triplets[i] for i in rank[:n]], [result.triplets[i] for i in sorted(rank[n:])]
