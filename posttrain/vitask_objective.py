"""VITask objective (arXiv 2410.06456): exemplar prompting (EP), response distribution alignment (RDA) and
contrastive response tuning (CRT), with a task-specific model (TSM) as exemplar source.

Injection. Exemplars enter through `inputs_embeds`, never by patching the model: the token embeddings and
the image features are computed with the model's own modules (`get_input_embeddings`, `get_image_features`),
the image features are scattered into the image-token positions exactly as the model's forward does, and the
connector output is then either inserted as `num_tokens` extra exemplar embeddings right after the sample's
last image token ("append", the default: with `tsm_feature="cls"` this is the paper's best variant, the TSM's
CLS feature given to the LLM as exemplar token(s) through a learnable connector; the logits of the inserted
positions are removed again, so every returned logit tensor lines up with `input_ids`) or added onto every
image token of its sample ("add", kept as an option). Supported are VLMs whose forward accepts `inputs_embeds`
+ `attention_mask` (Idefics3/SmolVLM, LLaVA-style, and Qwen2-VL/Qwen2.5-VL, whose M-RoPE position ids are
computed from `input_ids` and passed, "add" only). Mllama (images through cross-attention) and "append" on
M-RoPE models are refused with a clear message (`unsupported_reason`).

The connector is method state: it is saved apart from the model (`save_connector`), because inference uses
the plain VLM without TSM or connector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from posttrain.config import VITaskSettings
from posttrain.losses import IGNORE_INDEX, LOSSES, CRTLoss, combine
from posttrain.positions import rope_position_ids, unwrap, uses_mrope
from posttrain.tsm import TaskSpecificModel
from posttrain.vitask_data import Batch


def load_tsm(settings: VITaskSettings) -> TaskSpecificModel:
    """The frozen TSM named by `settings.tsm`, with the configured feature."""
    if not settings.tsm:
        raise ValueError("vitask needs a task-specific model: set train.vitask.tsm")
    return TaskSpecificModel.load(settings.tsm, feature=settings.tsm_feature)


class ExemplarConnector(nn.Module):
    """MLP from TSM features (B, D) to exemplar embeddings: (B, H) for "add", (B, K, H) for "append"."""

    def __init__(self, tsm_dim: int, hidden_size: int, mode: str = "add", num_tokens: int = 1):
        super().__init__()
        if mode not in ("add", "append"):
            raise ValueError(f"unknown connector mode {mode!r}")
        self.mode, self.num_tokens, self.hidden_size = mode, num_tokens if mode == "append" else 1, hidden_size
        self.mlp = nn.Sequential(
            nn.Linear(tsm_dim, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size * self.num_tokens)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.mlp(features)
        return out if self.mode == "add" else out.view(features.shape[0], self.num_tokens, self.hidden_size)


def unsupported_reason(model: nn.Module, mode: str) -> str | None:
    """Why exemplar injection cannot run on `model` in connector `mode`, or None when it can."""
    name = type(unwrap(model)).__name__
    if not callable(getattr(unwrap(model), "get_image_features", None)):
        return (f"{name} has no image features at image-token positions (Mllama reads images through "
                "cross-attention), so VITask exemplar prompting has nowhere to add the exemplar")
    if mode == "append" and uses_mrope(model):
        return (f"{name} uses M-RoPE: the 'append' connector would need 3-D position ids for the inserted "
                "exemplar tokens; use train.vitask.connector=add")
    return None


def _image_token_id(model: nn.Module) -> int:
    for name in ("image_token_id", "image_token_index"):
        value = getattr(model.config, name, None)
        if value is not None:
            return int(value)
    raise ValueError(f"{type(model).__name__}: config has no image_token_id/image_token_index")


def _image_features(model: nn.Module, batch: Batch) -> torch.Tensor:
    """(N_image_tokens, H) features of every image of the batch, in token order."""
    kwargs = {k: v.to(model.device) for k, v in batch.vision_inputs().items()}
    kwargs["pixel_values"] = kwargs["pixel_values"].to(model.dtype)
    out = model.get_image_features(**kwargs)
    out = getattr(out, "pooler_output", out)
    if isinstance(out, list | tuple):
        out = torch.cat([t.reshape(-1, t.shape[-1]) for t in out])
    return out.reshape(-1, out.shape[-1])


def forward_logits(
    model: nn.Module, batch: Batch, exemplar: torch.Tensor | None = None, mode: str = "add"
) -> torch.Tensor:
    """Logits (B, T, V) aligned with `batch.input_ids`, with the exemplar injected through `inputs_embeds`.

    exemplar: None (plain model), (B, H) for "add", (B, K, H) for "append".
    """
    device = model.device
    reason = unsupported_reason(model, mode if exemplar is not None else "add")
    if reason is not None:
        raise NotImplementedError(f"vitask: {reason}")
    input_ids = batch.input_ids.to(device)
    attention = batch.attention_mask.to(device)
    # M-RoPE models (Qwen2-VL) cannot derive their 3-D positions from inputs_embeds: pass them (add mode keeps L)
    positions = rope_position_ids(model, {k: v.to(device) for k, v in batch.inputs.items()})
    pos = {} if positions is None else {"position_ids": positions}
    embeds = model.get_input_embeddings()(input_ids)
    image_mask = input_ids == _image_token_id(model)
    feats = _image_features(model, batch).to(embeds.dtype)
    if int(image_mask.sum()) != feats.shape[0]:
        raise ValueError(f"{int(image_mask.sum())} image tokens but {feats.shape[0]} image feature vectors")
    embeds = embeds.masked_scatter(image_mask.unsqueeze(-1), feats)
    if exemplar is None:
        return model(inputs_embeds=embeds, attention_mask=attention, **pos).logits
    exemplar = exemplar.to(embeds.dtype)
    if mode == "add":
        embeds = embeds + image_mask.unsqueeze(-1).to(embeds.dtype) * exemplar[:, None, :]
        return model(inputs_embeds=embeds, attention_mask=attention, **pos).logits
    # "append": insert K embeddings after each sample's last image token; every row grows by K, no re-padding.
    B, T = input_ids.shape
    K = exemplar.shape[1]
    positions = torch.arange(T, device=device).expand(B, T)
    after = torch.where(image_mask, positions, torch.full_like(positions, -1)).amax(1) + 1  # (B,)
    if bool((after == 0).any()):
        raise ValueError("append needs an image token in every sample")
    rows, masks, keep = [], [], []
    for b in range(B):
        p = int(after[b])
        rows.append(torch.cat([embeds[b, :p], exemplar[b], embeds[b, p:]]))
        masks.append(torch.cat([attention[b, :p], attention.new_ones(K), attention[b, p:]]))
        keep.append(torch.cat([torch.arange(p, device=device), torch.arange(p + K, T + K, device=device)]))
    logits = model(inputs_embeds=torch.stack(rows), attention_mask=torch.stack(masks)).logits
    return logits.gather(1, torch.stack(keep).unsqueeze(-1).expand(B, T, logits.shape[-1]))


def align_negative_logits(
    labels: torch.Tensor, neg_logits: torch.Tensor, neg_labels: torch.Tensor, rows: Sequence[int], T: int
) -> torch.Tensor:
    """Move the negative pass's response logits onto the positive batch's positions.

    neg_logits (N, T', V) belong to samples `rows` of the positive batch (labels (B, T)); both carry the same
    response tokens, possibly at other offsets (a different number of image tokens). Returns (B, T, V), zero
    where no negative exists (CRT masks those samples).
    """
    out = neg_logits.new_zeros(labels.shape[0], T, neg_logits.shape[-1])
    for k, b in enumerate(rows):
        pos = (labels[b] != IGNORE_INDEX).nonzero().squeeze(-1)
        neg = (neg_labels[k] != IGNORE_INDEX).nonzero().squeeze(-1)
        if len(pos) != len(neg) or not torch.equal(labels[b, pos], neg_labels[k, neg].to(labels.device)):
            raise ValueError(f"negative of sample {b} does not carry the same response tokens")
        out[b, pos - 1] = neg_logits[k, neg - 1]
    return out


@dataclass
class VITaskOutput:
    total: torch.Tensor
    components: dict[str, torch.Tensor]
    logged: dict[str, float]
    crt: CRTLoss | None = None


class VITaskObjective(nn.Module):
    """Owns the exemplar connector and the TSM handle; computes the VITask loss of one batch.

    Components (names used for weights and logs): "van" plain next-token CE, "ep" CE with exemplars,
    "rda" KL(stopgrad exemplar-prompted || plain) (direction by `rda_direction`), "crt" (stage 2 only) own image
    vs negative image (form by `crt_form`).
    """

    def __init__(self, tsm: TaskSpecificModel, hidden_size: int, settings: VITaskSettings):
        super().__init__()
        self.tsm = tsm
        self.settings = settings
        self.connector = ExemplarConnector(tsm.feature_dim, hidden_size, settings.connector, settings.connector_tokens)

    def weights(self, stage: int) -> dict[str, float]:
        s = self.settings
        w = {"van": s.van_weight, "ep": s.ep_weight, "rda": s.rda_weight}
        if stage == 2:
            w["crt"] = s.crt_weight
        return w

    def exemplar(self, batch: Batch) -> torch.Tensor:
        if batch.tsm_pixels is None:
            raise ValueError("batch has no TSM pixels; collate it with the TSM")
        return self.connector(self.tsm.features(batch.tsm_pixels).to(next(self.connector.parameters()).device))

    def forward(self, model: nn.Module, batch: Batch, *, stage: int = 1, negative: Batch | None = None,
                negative_rows: Sequence[int] = ()) -> VITaskOutput:
        """negative: the batch's samples `negative_rows` re-encoded with their negative image (stage 2)."""
        labels = batch.labels.to(model.device)
        plain = forward_logits(model, batch)
        ep = forward_logits(model, batch, self.exemplar(batch), self.settings.connector)
        comps = {
            "van": LOSSES["next_token_ce"](plain, labels),
            "ep": LOSSES["next_token_ce"](ep, labels),
            "rda": LOSSES["rda_kl"](plain, ep, labels, direction=self.settings.rda_direction),
        }
        crt_out = None
        if stage == 2:
            has = torch.zeros(labels.shape[0], dtype=torch.bool, device=labels.device)
            neg_logits = torch.zeros_like(plain)
            if negative is not None and len(negative_rows):
                raw = forward_logits(model, negative)  # the plain model: the one used at inference
                neg_logits = align_negative_logits(labels, raw, negative.labels, negative_rows, labels.shape[1])
                has[list(negative_rows)] = True
            crt_out = LOSSES["crt"](plain, neg_logits, labels, has, form=self.settings.crt_form,
                                    score=self.settings.crt_score)
            comps["crt"] = crt_out.loss
        total, logged = combine(comps, self.weights(stage))
        if crt_out is not None:
            logged.update(crt_used=crt_out.n_used, crt_without_negative=crt_out.n_without_negative,
                          crt_without_tokens=crt_out.n_without_tokens)
        return VITaskOutput(total, comps, logged, crt_out)


CONNECTOR_FILE = "vitask_connector.safetensors"


def save_connector(connector: ExemplarConnector, path: str | Path, **meta: str) -> Path:
    """Write the connector weights as safetensors; its shape and `meta` (e.g. the TSM ref) go in the header."""
    from safetensors.torch import save_file

    header = {"mode": connector.mode, "num_tokens": str(connector.num_tokens),
              "tsm_dim": str(connector.mlp[0].in_features), "hidden_size": str(connector.hidden_size), **meta}
    state = {k: v.detach().cpu().contiguous() for k, v in connector.state_dict().items()}
    save_file(state, str(path), metadata=header)
    return Path(path)


def load_connector(path: str | Path) -> tuple[ExemplarConnector, dict[str, str]]:
    """The connector saved by `save_connector`, and its header."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    connector = ExemplarConnector(int(meta["tsm_dim"]), int(meta["hidden_size"]), meta["mode"], int(meta["num_tokens"]))
    connector.load_state_dict(load_file(str(path)))
    return connector, meta
