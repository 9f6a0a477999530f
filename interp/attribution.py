"""Attribution patching: the linear approximation of activation patching (Nanda 2023; Syed et al. 2023).

Patching an activation from `base` to `source` changes the metric by about grad_base(metric) . (source - base).
Two forwards and one backward give the whole grid of that estimate, for the same sites, directions and grid
shapes as `interp.patching.activation_patch`, reported the same way (as estimated patched metric values:
base metric + estimated change), so the two grids compare cell for cell with `agreement`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from jaxtyping import Int
from torch import Tensor

from interp.engine import RUN_FIELDS, run_bytes
from interp.errors import InterpError
from interp.metric_reader import Metric
from interp.patching import HEAD_SITES, SITE_FIELD, check_site, grid_shape, setup


def site_tensors(run, site: str, n_layers: int) -> list[Tensor]:
    """The site's activation at each layer (resid_pre / resid_mid / resid_post pick their residual boundaries)."""
    tensors = getattr(run, SITE_FIELD[site])
    if site in ("resid_pre", "resid_mid", "resid_post"):
        offset = ("resid_pre", "resid_mid", "resid_post").index(site)
        return [tensors[2 * layer + offset] for layer in range(n_layers)]
    return tensors


def summed_effect(product: Tensor, site: str, by_position: bool) -> Tensor:
    """grad x delta of one layer summed over everything a single patch covers: [pos] or [] for residual sites,
    [pos, head] or [head] for head sites (pattern's pos is the query position)."""
    if site == "pattern":  # [batch, head, query_pos, key_pos]
        per_position = product.sum((0, 3)).T
    elif site in HEAD_SITES:  # [batch, pos, head, d_head]
        per_position = product.sum((0, 3))
    else:  # [batch, pos, d_model]
        per_position = product.sum((0, 2))
    return per_position if by_position else per_position.sum(0)


def attribution_patch(
    model,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupt_tokens: Int[Tensor, "batch pos"],
    metric: Metric | Callable,
    site: str,
    direction: str = "denoise",
    by_position: bool | None = None,
    max_memory: int | None = None,
) -> Tensor:
    """The attribution-patching estimate of `activation_patch`'s grid (same arguments, same shape): base metric +
    grad . (source activation - base activation) over each patched slice. Refuses before running when the two
    recorded runs and the backward would not fit in `max_memory` bytes."""
    by_position = check_site(site, direction, by_position)
    s = setup(model, clean_tokens, corrupt_tokens, metric, direction)
    n_batch, n_computed = s.base_tokens.shape
    if max_memory is not None:
        # The graph holds every activation of the base run (those a Run records, the two LayerNorms' outputs, the
        # MLP's hidden layer before and after GELU); the backward as much again; plus the source run's site.
        itemsize = s.tf.W_E.element_size()
        d_model, d_mlp = s.tf.W_E.shape[1], s.tf.layers[0].W_in.shape[1]
        graph = run_bytes(
            s.tf, n_batch, n_computed, RUN_FIELDS, itemsize
        ) + itemsize * n_batch * n_computed * s.tf.n_layers * (2 * d_model + 2 * d_mlp)
        needed = 2 * graph + run_bytes(s.tf, n_batch, n_computed, [SITE_FIELD[site]], itemsize)
        if needed > max_memory:
            raise InterpError(
                f"attribution patching this batch needs about {needed / 2**20:.1f} MiB, over the budget "
                f"of {max_memory / 2**20:.1f} MiB: use fewer or shorter prompts"
            )
    field = SITE_FIELD[site]
    with torch.inference_mode():
        source = s.tf.run(s.source_tokens, s.reader, [field])
    with torch.enable_grad():
        base = s.tf.run(s.base_tokens, s.reader, [field], track_grad=True)
        if not base.value.requires_grad:
            raise InterpError("the metric does not depend on the logits: there is no gradient to attribute with")
        activations = site_tensors(base, site, s.tf.n_layers)
        grads = torch.autograd.grad(base.value, activations)
    with torch.no_grad():
        grid = torch.full(
            grid_shape(site, by_position, s.tf.n_layers, s.n_pos, s.tf.n_heads),
            float(base.value),
            device=base.value.device,
        )
        for layer, (grad, activation, source_activation) in enumerate(
            zip(grads, activations, site_tensors(source, site, s.tf.n_layers))
        ):
            effect = summed_effect(grad * (source_activation - activation), site, by_position).to(grid.device)
            if by_position:  # positions after the last one the metric reads were not computed: no effect
                grid[layer, :n_computed] += effect
            else:
                grid[layer] += effect
    return grid


def agreement(exact: Tensor, estimate: Tensor) -> dict[str, float]:
    """How well an attribution grid matches the exact one: Pearson correlation of the cells (NaN cells ignored),
    max and mean absolute difference, and both grids' ranges for scale."""
    if exact.shape != estimate.shape:
        raise InterpError(f"grids of shapes {tuple(exact.shape)} and {tuple(estimate.shape)} cannot be compared")
    keep = ~(exact.isnan() | estimate.isnan())
    x, y = exact[keep].double(), estimate[keep].double()
    if len(x) < 2:
        raise InterpError("fewer than two cells to compare")
    centred_x, centred_y = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(centred_x.square().sum() * centred_y.square().sum()))
    difference = (x - y).abs()
    return {
        "pearson": float((centred_x * centred_y).sum()) / denominator if denominator else float("nan"),
        "max_abs_diff": float(difference.max()),
        "mean_abs_diff": float(difference.mean()),
        "exact_range": float(x.max() - x.min()),
        "estimate_range": float(y.max() - y.min()),
        "n_cells": len(x),
    }
