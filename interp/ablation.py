"""Ablation: replace components' outputs by zero, or by their mean over a reference distribution.

Components are attention heads (their `z`, before W_O), whole attention layers or MLPs. Zero-ablating a head
zeroes its processed `z`; weight processing has folded the head's value bias (and LN1's bias through W_V)
into the layer's output bias, so that constant stays (as in TransformerLens). Mean ablation, the method of the IOI
paper, is unaffected. Mean ablation can be taken within groups (e.g. IOI templates, so that positions line up): each
prompt gets its own group's mean.
Hooks live only inside the `ablated` context, which removes them whatever happens inside.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch

from interp.cache import run_with_selective_cache
from interp.errors import InterpError

Method = Literal["zero", "mean"]


@dataclass(frozen=True, order=True)
class Component:
    kind: Literal["head", "attn", "mlp"]
    layer: int
    head: int | None = None

    @property
    def hook_name(self) -> str:
        return {
            "head": f"blocks.{self.layer}.attn.hook_z",
            "attn": f"blocks.{self.layer}.hook_attn_out",
            "mlp": f"blocks.{self.layer}.hook_mlp_out",
        }[self.kind]

    def __str__(self) -> str:
        return f"{self.layer}.{self.head}" if self.kind == "head" else f"{self.kind}{self.layer}"


def heads(pairs: Iterable[tuple[int, int]]) -> list[Component]:
    return [Component("head", layer, head) for layer, head in pairs]


def mlps(layers: Iterable[int]) -> list[Component]:
    return [Component("mlp", layer) for layer in layers]


def all_heads(model) -> list[Component]:
    return heads((layer, head) for layer in range(model.cfg.n_layers) for head in range(model.cfg.n_heads))


def check_layer(model, layer, what: str = "") -> int:
    """`layer`, or a clear error naming it (`what` says whose layer) when the model has no such layer."""
    if not (isinstance(layer, int) and 0 <= layer < model.cfg.n_layers):
        raise InterpError(
            f"{what} layer {layer!r} is out of range: the model has layers 0..{model.cfg.n_layers - 1}".lstrip()
        )
    return layer


def check_head(model, layer, head, what: str = "") -> tuple[int, int]:
    """(layer, head), or a clear error naming the one the model does not have."""
    check_layer(model, layer, what)
    if not (isinstance(head, int) and 0 <= head < model.cfg.n_heads):
        raise InterpError(
            f"{what} head {head!r} is out of range: the model has heads 0..{model.cfg.n_heads - 1}".lstrip()
        )
    return layer, head


def check_components(model, components: Iterable[Component]) -> None:
    for c in components:
        if c.kind == "head":
            check_head(model, c.layer, c.head)
        else:
            check_layer(model, c.layer)


def group_index(groups: torch.Tensor | None, n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.long) if groups is None else torch.as_tensor(groups, dtype=torch.long)


def mean_activations(
    model, reference_tokens: torch.Tensor, components: Iterable[Component], groups: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Per hook, the mean activation over the reference prompts of each group: [n_groups, pos, ...]."""
    components = list(components)
    if len(reference_tokens) == 0:
        raise InterpError("the reference dataset for mean ablation is empty")
    names = sorted({c.hook_name for c in components})
    _, cache = run_with_selective_cache(model, reference_tokens, names)
    index = group_index(groups, len(reference_tokens))
    n_groups = int(index.max()) + 1
    means = {}
    for name in names:
        activation = cache[name]
        total = torch.zeros((n_groups, *activation.shape[1:]), dtype=activation.dtype, device=activation.device)
        total.index_add_(0, index.to(activation.device), activation)
        counts = torch.bincount(index, minlength=n_groups).clamp(min=1).to(activation.device)
        means[name] = total / counts.view(-1, *[1] * (activation.dim() - 1))
    return means


@contextmanager
def ablated(
    model,
    components: Iterable[Component],
    method: Method = "zero",
    means: dict[str, torch.Tensor] | None = None,
    groups: torch.Tensor | None = None,
):
    """Within the block, the model runs with `components` ablated. For "mean", `means` comes from
    `mean_activations` and `groups` gives each prompt of the batch its group (all 0 when None)."""
    components = list(components)
    check_components(model, components)
    if method not in ("zero", "mean"):
        raise InterpError(f"unknown ablation method {method!r}; use 'zero' or 'mean'")
    if method == "mean" and means is None:
        raise InterpError("mean ablation needs the reference means (see mean_activations)")
    by_hook: dict[str, list[int | None]] = defaultdict(list)
    for c in components:
        by_hook[c.hook_name].append(c.head)

    def hook_for(name: str, head_indices: list[int | None]):
        whole = None in head_indices

        def replace(activation: torch.Tensor, hook) -> torch.Tensor:
            if method == "zero":
                value = torch.zeros_like(activation)
            else:
                index = group_index(groups, activation.shape[0]).to(activation.device)
                value = means[name][index][:, : activation.shape[1]].to(activation.dtype)
            if whole:
                return value.expand_as(activation).clone()
            activation = activation.clone()
            activation[:, :, head_indices] = value[:, :, head_indices] if value.dim() == 4 else 0.0
            return activation

        return replace

    with model.hooks(fwd_hooks=[(name, hook_for(name, h)) for name, h in by_hook.items()]):
        yield model


def run_with_ablation(
    model,
    tokens: torch.Tensor,
    components: Iterable[Component],
    method: Method = "zero",
    means: dict[str, torch.Tensor] | None = None,
    groups: torch.Tensor | None = None,
):
    """Logits of `tokens` with `components` ablated."""
    with torch.inference_mode(), ablated(model, components, method, means, groups):
        return model(tokens)
