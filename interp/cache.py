"""Selective activation caching: only the hooks asked for, only the positions asked for, optionally stored in a
lower precision, with the cache's size known before the run."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.model_bridge.exceptions import StopAtLayerException

from interp.errors import InterpError

# What each hook's activation looks like, by the last part of its name (TransformerLens naming).
_SHAPES = {
    "hook_resid_pre": ("pos", "d_model"),
    "hook_resid_mid": ("pos", "d_model"),
    "hook_resid_post": ("pos", "d_model"),
    "hook_attn_out": ("pos", "d_model"),
    "hook_mlp_out": ("pos", "d_model"),
    "hook_embed": ("pos", "d_model"),
    "hook_pos_embed": ("pos", "d_model"),
    "hook_q": ("pos", "n_heads", "d_head"),
    "hook_k": ("pos", "n_heads", "d_head"),
    "hook_v": ("pos", "n_heads", "d_head"),
    "hook_z": ("pos", "n_heads", "d_head"),
    "hook_result": ("pos", "n_heads", "d_model"),
    "hook_attn_scores": ("n_heads", "pos", "key_pos"),
    "hook_pattern": ("n_heads", "pos", "key_pos"),
    "hook_pre": ("pos", "d_mlp"),
    "hook_post": ("pos", "d_mlp"),
    "hook_scale": ("pos", "one"),
    "hook_normalized": ("pos", "d_model"),
}


def hook_shape(model, name: str, n_batch: int, n_pos: int, n_positions_kept: int | None = None) -> tuple[int, ...]:
    """The shape the cache will hold for hook `name` on a [n_batch, n_pos] input."""
    if name not in model.hook_dict:
        raise InterpError(f"unknown hook {name!r} (TransformerLens names, e.g. 'blocks.0.attn.hook_z')")
    suffix = name.rsplit(".", 1)[-1]
    if suffix not in _SHAPES:
        raise InterpError(f"cannot estimate the size of hook {name!r}")
    cfg = model.cfg
    sizes = {
        "pos": n_positions_kept or n_pos,
        "key_pos": n_pos,
        "d_model": cfg.d_model,
        "n_heads": cfg.n_heads,
        "d_head": cfg.d_head,
        "d_mlp": cfg.d_mlp,
        "one": 1,
    }
    return (n_batch, *(sizes[axis] for axis in _SHAPES[suffix]))


def cache_size_bytes(
    model,
    names: Sequence[str],
    n_batch: int,
    n_pos: int,
    positions: Sequence[int] | None = None,
    dtype: torch.dtype | None = None,
) -> int:
    """Bytes the cache of `names` will take for a [n_batch, n_pos] input, computed before running anything."""
    itemsize = torch.empty((), dtype=dtype or model.cfg.dtype).element_size()
    kept = len(positions) if positions is not None else None
    total = 0
    for name in names:
        n = 1
        for size in hook_shape(model, name, n_batch, n_pos, kept):
            n *= size
        total += n * itemsize
    return total


def expand_names(model, names: Sequence[str] | str) -> list[str]:
    """Hook names, where a string is a regular expression matched against every hook name."""
    if isinstance(names, str):
        found = [n for n in model.hook_dict if re.fullmatch(names, n)]
        if not found:
            raise InterpError(f"no hook name matches {names!r}")
        return found
    return list(names)


def run_with_selective_cache(
    model,
    tokens: torch.Tensor,
    names: Sequence[str] | str,
    positions: Sequence[int] | None = None,
    dtype: torch.dtype | None = None,
    max_memory: int | None = None,
    unembed: bool = True,
) -> tuple[torch.Tensor | None, ActivationCache]:
    """(logits, cache) holding only `names` (a list, or a regex), at `positions` (all when None), in `dtype`.

    Refuses before running when the cache would exceed `max_memory` bytes. Position-sliced activations keep the
    position axis (its length is len(positions)); attention patterns are sliced on the query axis. With
    `unembed=False` the run stops before the final LayerNorm (logits None): the unembedding of every position
    costs more than the whole of a small model. Hooks already on the model stay active.
    """
    names = expand_names(model, names)
    if tokens.ndim == 1:
        tokens = tokens[None]
    n_batch, n_pos = tokens.shape
    if positions is not None:
        bad = [p for p in positions if not -n_pos <= p < n_pos]
        if bad:
            raise InterpError(f"positions {bad} are out of range for a prompt of {n_pos} tokens")
    size = cache_size_bytes(model, names, n_batch, n_pos, positions, dtype)
    if max_memory is not None and size > max_memory:
        raise InterpError(
            f"the cache would take {size / 2**20:.1f} MiB, over the budget of "
            f"{max_memory / 2**20:.1f} MiB: cache fewer hooks or positions, or a smaller batch"
        )
    index = None if positions is None else torch.tensor([p % n_pos for p in positions])
    store: dict[str, torch.Tensor] = {}

    def saver(name: str):
        # Stored under the name asked for: the bridge may report a hook by another (aliased) name.
        query_axis = 2 if name.endswith(("hook_pattern", "hook_attn_scores")) else 1

        def save(activation: torch.Tensor, hook) -> None:
            kept = activation.detach()
            if index is not None:
                kept = kept.index_select(query_axis, index.to(kept.device))
            store[name] = kept.to(dtype) if dtype is not None else kept.clone()

        return save

    def stop(activation: torch.Tensor, hook):
        raise StopAtLayerException(activation)  # run_with_hooks catches it and returns

    hooks = [(name, saver(name)) for name in names] + ([] if unembed else [("ln_final.hook_in", stop)])
    with torch.inference_mode():
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    return (logits if unembed else None), ActivationCache(store, model)
