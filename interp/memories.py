"""Feed-forward layers as key-value memories (Geva et al. 2021).

A neuron i of block l's MLP reads its key (column i of W_in) from the residual stream and, as much as it fires,
adds its value (row i of W_out) back. The value projected onto the vocabulary, W_out[i] @ W_U, reads as the
tokens the neuron promotes; the contexts where it fires most show the pattern its key matches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interp.ablation import check_components, mlps
from interp.errors import InterpError
from interp.tokens import prompt_ids, single_token_id, str_tokens
from interp.vectors import batched_activations, last_position


def check_neurons(model, layer: int, neurons: Sequence[int]) -> None:
    check_components(model, mlps([layer]))
    bad = [n for n in neurons if not 0 <= n < model.cfg.d_mlp]
    if bad:
        raise InterpError(f"neurons {bad} are out of range: an MLP has neurons 0..{model.cfg.d_mlp - 1}")


@torch.inference_mode()
def value_tokens(model, layer: int, neuron: int, k: int = 10) -> list[tuple[str, float]]:
    """The k tokens the neuron's value vector promotes most: W_out[neuron] @ W_U, largest first."""
    check_neurons(model, layer, [neuron])
    scores = model.W_out[layer, neuron] @ model.W_U
    values, ids = scores.float().topk(k)
    return [(model.tokenizer.decode([i]), v) for i, v in zip(ids.tolist(), values.tolist())]


@torch.inference_mode()
def answer_neurons(
    model, prompt: str, layer: int, token: str, k: int = 3, *, prepend_bos: bool = True
) -> list[tuple[int, float]]:
    """The k neurons of block `layer` that write the most for `token` at the prompt's last position: their
    activation times their value's logit for it (the direct effect, before the final LayerNorm's scale)."""
    check_neurons(model, layer, [])
    token_id = single_token_id(token, model.tokenizer, "token")
    name = f"blocks.{layer}.mlp.hook_post"
    activations = last_position(model, [prompt], [name], prepend_bos=prepend_bos)[name][0].to(model.cfg.device)
    contributions = activations * (model.W_out[layer] @ model.W_U[:, token_id])
    values, ids = contributions.float().topk(k)
    return list(zip(ids.tolist(), values.tolist()))


def top_contexts(
    model,
    layer: int,
    neurons: Sequence[int],
    texts: Sequence[str],
    k: int = 5,
    window: int = 8,
    *,
    prepend_bos: bool = True,
) -> dict[int, list[dict]]:
    """For each neuron, the k (text, position) pairs of a text sample where it fires most: the activation, the
    text's index, the token there and the `window` tokens before it (a BOS is never one of them: it is the same
    in every text)."""
    check_neurons(model, layer, neurons)
    name = f"blocks.{layer}.mlp.hook_post"
    start = int(prepend_bos)
    found: dict[int, list[tuple[float, int, int]]] = {n: [] for n in neurons}  # (activation, text, position)
    for indices, kept in batched_activations(model, texts, [name], prepend_bos=prepend_bos):
        for neuron in neurons:
            activations = kept[name][:, start:, neuron].float().cpu()
            values, flat = activations.flatten().topk(min(k, activations.numel()))
            found[neuron] += [
                (v, indices[f // activations.shape[1]], f % activations.shape[1] + start)
                for v, f in zip(values.tolist(), flat.tolist())
            ]
    contexts = {}
    for neuron, hits in found.items():
        contexts[neuron] = []
        for activation, text, position in sorted(hits, key=lambda h: (-h[0], h[1], h[2]))[:k]:
            tokens = str_tokens(prompt_ids(texts[text], model.tokenizer, prepend_bos=prepend_bos), model.tokenizer)
            contexts[neuron].append(
                {
                    "activation": activation,
                    "text": text,
                    "token": tokens[position],
                    "context": "".join(tokens[max(start, position - window) : position]),
                }
            )
    return contexts
