"""FFN output vectors at the last position (Merullo et al.): cache them, read them through the logit lens,
transplant them into other prompts, load the authors' released ones from .npy files.

Prompts are run in batches of equal token length, so no padding is needed and position -1 is every prompt's
last token. Most measurements keep only that position: it is where the next token is predicted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from interp.ablation import check_components, mlps
from interp.cache import run_with_selective_cache
from interp.errors import InterpError
from interp.lens import lens_logits
from interp.metrics import token_ranks
from interp.tokens import batches_by_length, prompt_tokens


def mlp_out(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_out"


def prompt_batches(
    model, prompts: Sequence[str], batch_size: int = 32, *, prepend_bos: bool = True
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(indices into `prompts`, tokens [batch, pos]) for groups of prompts of the same length, BOS first when
    `prepend_bos`."""
    if not prompts:
        raise InterpError("the prompt list is empty")
    return batches_by_length(
        [prompt_tokens(model, prompt, prepend_bos=prepend_bos)[0] for prompt in prompts], batch_size
    )


def batched_activations(
    model, prompts: Sequence[str], hook_names: Sequence[str], batch_size: int = 32, *, prepend_bos: bool = True
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """For each group of same-length prompts: (their indices, hook name -> activation [batch, pos, ...]).

    Hooks already on the model (an `ablated` or `mlp_outputs_replaced` block around the call) stay active. The
    run stops before the unembedding: unembedding every position costs more than the whole of a small model.
    """
    for indices, tokens in prompt_batches(model, prompts, batch_size, prepend_bos=prepend_bos):
        _, cache = run_with_selective_cache(model, tokens, hook_names, unembed=False)
        yield indices, cache.cache_dict


def last_position(
    model, prompts: Sequence[str], hook_names: Sequence[str], batch_size: int = 32, *, prepend_bos: bool = True
) -> dict[str, torch.Tensor]:
    """Each hook's activation at each prompt's last token: name -> [n_prompts, ...], in the order of `prompts`."""
    rows: dict[str, list] = {name: [None] * len(prompts) for name in hook_names}
    for indices, kept in batched_activations(model, prompts, hook_names, batch_size, prepend_bos=prepend_bos):
        for name in hook_names:
            for i, row in zip(indices, kept[name][:, -1].cpu()):
                rows[name][i] = row
    return {name: torch.stack(values) for name, values in rows.items()}


@torch.inference_mode()
def lens_ranks(model, residuals: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Ranks of `ids` when residual streams [n, d_model] (or [n, n_boundaries, d_model]) are read through
    the logit lens. ids [n] or [n, k]; the result has a boundary axis after n when the residuals do."""
    if residuals.dim() == 2:
        return token_ranks(lens_logits(model, residuals.to(model.cfg.device)).float().cpu(), ids)
    return torch.stack([lens_ranks(model, residuals[:, b], ids) for b in range(residuals.shape[1])], dim=1)


def final_logits(model, prompts: Sequence[str], *, prepend_bos: bool = True) -> torch.Tensor:
    """Next-token logits [n_prompts, d_vocab] at each prompt's last token (hooks on the model apply)."""
    name = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    hidden = last_position(model, prompts, [name], prepend_bos=prepend_bos)[name]
    with torch.inference_mode():  # the model's own logits are the lens on the last block's output
        return lens_logits(model, hidden.to(model.cfg.device)).float().cpu()


@contextmanager
def mlp_outputs_replaced(
    model, vector: torch.Tensor, layers: Iterable[int], positions: Literal["all"] | Sequence[int] = "all"
):
    """Within the block, the MLPs of `layers` output `vector` at `positions` of every prompt: "all" (the MLP
    replaced by a constant function, as Merullo et al.'s code does) or a list of indices (-1: the last token)."""
    layers = list(layers)
    check_components(model, mlps(layers))
    if vector.shape != (model.cfg.d_model,):
        raise InterpError(
            f"the vector has shape {tuple(vector.shape)}; the model's residual stream is "
            f"{model.cfg.d_model}-dimensional"
        )
    if positions != "all" and (isinstance(positions, str) or not positions):
        raise InterpError(f"positions must be 'all' or a list of token indices, not {positions!r}")
    where = slice(None) if positions == "all" else list(positions)

    def replace(activation: torch.Tensor, hook) -> torch.Tensor:
        activation = activation.clone()
        activation[:, where] = vector.to(activation.device, activation.dtype)
        return activation

    with model.hooks(fwd_hooks=[(mlp_out(layer), replace) for layer in layers]):
        yield model


@dataclass(frozen=True)
class LoadedVector:
    vector: torch.Tensor  # [d_model], float32
    path: str
    sha256: str  # of the file's bytes: which release of the vector was used


def load_vector(path: str | Path, d_model: int) -> LoadedVector:
    """A d_model vector from a .npy file, such as the authors' released o-vectors (1024-d float32 arrays for GPT-2
    medium; singleton axes are dropped). They are transformers' raw MLP outputs, not centred as the bridge's are:
    that changes nothing downstream, since every reader of the residual stream is a LayerNorm, which subtracts
    the mean."""
    path = Path(path)
    if path.suffix != ".npy":
        raise InterpError(f"o-vector file {path} is not a .npy file")
    if not path.is_file():
        raise InterpError(f"o-vector file {path} does not exist")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError):
        array = None
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.number):
        raise InterpError(f"o-vector file {path} does not hold a numeric NumPy array (.npy format)")
    if array.squeeze().shape != (d_model,):
        raise InterpError(
            f"o-vector file {path} holds an array of shape {array.shape}; the model's residual stream "
            f"is {d_model}-dimensional"
        )
    if not np.isfinite(array).all():
        raise InterpError(f"o-vector file {path} holds NaN or infinite values")
    return LoadedVector(
        torch.from_numpy(array.squeeze().astype(np.float32)), str(path), hashlib.sha256(path.read_bytes()).hexdigest()
    )


def mean_mlp_outputs(
    model, prompts: Sequence[str], layers: Iterable[int], *, prepend_bos: bool = True
) -> dict[str, torch.Tensor]:
    """Means for `interp.ablation.ablated(..., "mean")` over prompts of different lengths: [1, n_ctx, d_model].

    A BOS at position 0 sees only itself, so its output is the same in every prompt and keeps that value; the
    other positions hold different words in prompts of different lengths, so they share one mean over all of them.
    """
    layers = list(layers)
    check_components(model, mlps(layers))
    if not layers:
        raise InterpError("no layers to take the mean MLP output of")
    names = [mlp_out(layer) for layer in layers]
    start = int(prepend_bos)  # positions from here on share the mean
    first: dict[str, torch.Tensor] = {}
    total = {name: 0.0 for name in names}
    count = 0
    for _, kept in batched_activations(model, prompts, names, prepend_bos=prepend_bos):
        count += kept[names[0]].shape[0] * (kept[names[0]].shape[1] - start)
        for name in names:
            first[name] = kept[name][0, 0]
            total[name] = total[name] + kept[name][:, start:].sum((0, 1))
    if count == 0:
        raise InterpError("the reference prompts for the mean are empty (only a BOS token)")
    means = {}
    for name in names:
        mean = (total[name] / count).expand(1, model.cfg.n_ctx, -1).clone()
        if prepend_bos:
            mean[0, 0] = first[name]
        means[name] = mean
    return means


@torch.inference_mode()
def predictions_without_last_mlps(
    model, tokens: torch.Tensor, ks: Sequence[int], means: dict[str, torch.Tensor] | None = None
) -> torch.Tensor:
    """[len(ks), batch]: the top next token at each prompt's last position (prompts of one length) with the MLPs of
    the last k blocks output zero, or their mean (`means`, as `mean_mlp_outputs` gives them) when given, for each k.

    What `ablated(model, mlps(last k), ...)` around a forward gives, in one batched run on the patching engine:
    blocks before the first ablated MLP are the same for every k, so each variant starts from the unablated run's
    resid_mid at its first ablated block, and every MLP it then meets is ablated."""
    from interp.engine import Transformer, take_positions
    from interp.metric_reader import Metric, make_reader

    n_layers = model.cfg.n_layers
    tokens = tokens.to(model.cfg.device)
    reader = make_reader(Metric(lambda logits: logits.sum(), positions=-1), *tokens.shape, model.cfg.device)
    tf = Transformer(model)
    base = tf.run(tokens, reader, ["resid", "k", "v"])

    def first_ablated(k: int) -> int:  # the boundary before block n-k's MLP (k = 0: the final residual)
        return 2 * (n_layers - k) + (k > 0)

    order = sorted(range(len(ks)), key=lambda i: -ks[i])  # rows join in boundary order: the largest k first
    joins = [(first_ablated(ks[i]), lambda b=first_ablated(ks[i]): base.resid[b][None]) for i in order]
    replacement = [
        torch.zeros((), device=tf.device(layer), dtype=tf.W_E.dtype)
        if means is None
        else means[mlp_out(layer)][:, : tokens.shape[1]].to(tf.device(layer))
        for layer in range(n_layers)
    ]

    def step(boundary: int, state: torch.Tensor) -> torch.Tensor:
        layer, after_attention = divmod(boundary, 2)
        return state + replacement[layer] if after_attention else tf.attention(layer, state, 0, base)

    final = tf.flow(joins, 2 * n_layers, step, lambda boundary, rows: rows)
    top = tf.logits(take_positions(final, reader.positions)).argmax(-1)[..., 0]  # [rows, batch]
    return top[torch.argsort(torch.tensor(order, device=top.device))]
