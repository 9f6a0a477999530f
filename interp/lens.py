"""The logit lens: read each layer boundary's residual stream as if it were the last.

For every boundary (the embeddings, then the output of each block) the final LayerNorm is recomputed on that
residual and the result unembedded. Probabilities are the softmax over the full vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from interp.cache import run_with_selective_cache
from interp.errors import InterpError
from interp.metrics import token_ranks
from interp.tokens import bos_id, prompt_tokens, single_token_id, str_tokens


def boundary_hooks(n_layers: int) -> list[str]:
    """Hook names of the n_layers + 1 layer boundaries: embeddings, then each block's output."""
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{layer}.hook_resid_post" for layer in range(n_layers)]


def boundary_name(index: int) -> str:
    return "embed" if index == 0 else f"block {index - 1}"


def lens_logits(model, residual: torch.Tensor) -> torch.Tensor:
    """Logits of a residual stream read through the final LayerNorm (recomputed on it) and the unembedding."""
    return model.unembed(model.ln_final(residual))


@torch.inference_mode()
def head_logit_contributions(
    model, tokens: torch.Tensor, positions: torch.Tensor, token_ids: torch.Tensor
) -> torch.Tensor:
    """[batch, layer, head, n]: each head's direct contribution to the logits of each prompt's `token_ids`
    ([batch, n]) at its position (`positions`, one per prompt): the head's output there through the final
    LayerNorm's scale of the whole residual, times the unembedding; in float32 whatever the model's dtype (these
    are sums of many small terms)."""
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)] + ["ln_final.hook_scale"]
    _, cache = run_with_selective_cache(model, tokens, names)
    rows = torch.arange(len(tokens))
    positions = torch.as_tensor(positions)
    unembed = model.W_U[:, torch.as_tensor(token_ids).to(model.W_U.device)].float()  # [d_model, batch, n]
    scale = cache["ln_final.hook_scale"][rows, positions].float()  # [batch, 1]
    contributions = []
    for layer in range(model.cfg.n_layers):
        z = cache[f"blocks.{layer}.attn.hook_z"][rows, positions].float()  # [batch, head, d_head]
        head_out = torch.einsum("bhd,hdm->bhm", z, model.W_O[layer].float()) / scale[:, :, None]
        contributions.append(torch.einsum("bhm,mbn->bhn", head_out, unembed.to(head_out.device)).cpu())
    return torch.stack(contributions, 1)


@dataclass
class LensResult:
    """The lens over one prompt. Boundary i is the embeddings (i = 0) or the output of block i - 1."""

    str_tokens: list[str]
    prepend_bos: bool  # whether the first token is a BOS put there by the tokenization
    top_ids: torch.Tensor  # [n_boundaries, pos, k]
    top_probs: torch.Tensor  # [n_boundaries, pos, k]
    targets: list[str] = field(default_factory=list)
    target_probs: torch.Tensor | None = None  # [n_boundaries, pos, n_targets]
    target_ranks: torch.Tensor | None = None  # [n_boundaries, pos, n_targets]; 1 = top token

    def top_tokens(self, model, boundary: int, position: int = -1) -> list[tuple[str, float]]:
        ids, probs = self.top_ids[boundary, position], self.top_probs[boundary, position]
        return [(model.tokenizer.decode([i]), p) for i, p in zip(ids.tolist(), probs.tolist())]


def logit_lens(
    model, prompt: str | torch.Tensor, targets: list[str] = (), top_k: int = 5, *, prepend_bos: bool = True
) -> LensResult:
    """Top-k tokens and the probability and rank of each target token at every boundary and position. A prompt
    given as text is tokenized with BOS first when `prepend_bos`; tokens are used as they are."""
    tokens = prompt_tokens(model, prompt, prepend_bos=prepend_bos) if isinstance(prompt, str) else prompt
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.shape[0] != 1:
        raise InterpError("logit_lens reads one prompt at a time")
    if top_k < 1:
        raise InterpError(f"top-k must be at least 1, not {top_k}")
    target_ids = torch.tensor([single_token_id(t, model.tokenizer, "target") for t in targets], dtype=torch.long)
    _, cache = run_with_selective_cache(model, tokens, boundary_hooks(model.cfg.n_layers))
    top_ids, top_probs, target_probs, target_ranks = [], [], [], []
    with torch.inference_mode():
        for name in boundary_hooks(model.cfg.n_layers):
            probs = lens_logits(model, cache[name][0]).float().softmax(-1)  # [pos, vocab]
            values, ids = probs.topk(top_k, dim=-1)
            top_ids.append(ids)
            top_probs.append(values)
            if len(target_ids):
                targets_by_position = target_ids.expand(len(probs), -1)  # [pos, n_targets]
                target_probs.append(probs.gather(-1, targets_by_position))
                target_ranks.append(token_ranks(probs, targets_by_position))
    stack = lambda xs: torch.stack(xs).cpu() if xs else None  # noqa: E731
    starts_with_bos = prepend_bos if isinstance(prompt, str) else bool(tokens[0, 0] == bos_id(model.tokenizer))
    return LensResult(
        str_tokens(tokens[0], model.tokenizer),
        starts_with_bos,
        stack(top_ids),
        stack(top_probs),
        list(targets),
        stack(target_probs),
        stack(target_ranks),
    )


def lens_json(model, result: LensResult, model_spec: str, position: int = -1) -> dict:
    """The CLI's JSON: one entry per boundary, top tokens and target prob/rank at `position`; `prepend_bos` says
    whether the first token is a BOS the tokenizer added."""
    layers = []
    for boundary in range(result.top_ids.shape[0]):
        entry = {
            "layer": boundary,
            "name": boundary_name(boundary),
            "top_tokens": [{"token": t, "prob": round(p, 6)} for t, p in result.top_tokens(model, boundary, position)],
        }
        if result.targets:
            entry["targets"] = {
                t: {
                    "prob": round(result.target_probs[boundary, position, i].item(), 6),
                    "rank": int(result.target_ranks[boundary, position, i]),
                }
                for i, t in enumerate(result.targets)
            }
        layers.append(entry)
    decode = lambda ids: [[model.tokenizer.decode([i]) for i in row] for row in ids]  # noqa: E731
    top1 = {"tokens": decode(result.top_ids[:, :, 0].tolist()), "probs": result.top_probs[:, :, 0].tolist()}
    return {
        "model": model_spec,
        "tokens": result.str_tokens,
        "prepend_bos": result.prepend_bos,
        "position": position,
        "layers": layers,
        "top1_grid": top1,
    }
