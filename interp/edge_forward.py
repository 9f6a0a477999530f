"""GPT-2's forward with a residual stream per reader: the run in which single edges can be cut.

In the ordinary forward every reader of a layer sees the same residual, the sum of every writer before it. Here
each reader (each head's q, k and v input, each MLP, the logits; `interp.graph`) gets its own: the writers whose
edge into it is kept contribute their output in this run, the others their *replacement* (their output on the
corrupted prompts, their mean, or zero). With every edge kept it is the model's forward; with gradients on, the
readers' own inputs are what EAP differentiates with respect to.

The forward is written over the patching engine's processed weights (`interp.engine.Transformer`), so it shares
its arithmetic; tests check it against TransformerLens's hooks (`hook_q_input`, `hook_result`, ...) on the bridge.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.engine import Transformer, attend, take_positions
from interp.errors import InterpError
from interp.graph import Graph

INTERVENTIONS = ("patching", "mean", "zero")
DEFAULT_MEMORY = 2**30  # working memory of edge scoring and circuit runs when no budget is given


@dataclass
class EdgeRun:
    """What one edge forward returns: the logits at the read positions, every writer's output (when recorded)
    and the readers' inputs in reader order, when exposed for gradients: per layer [batch, pos, 3 * head,
    d_model] (q, k, v) then [batch, pos, 1, d_model] (MLP); last the logits' [batch, pos, 1, d_model])."""

    logits: Float[Tensor, "batch n_read n_columns"]
    writers: Float[Tensor, "batch pos n_writers d_model"] | None
    reader_inputs: list[Tensor]


def prompts_per_chunk(per_prompt: int, n_batch: int, n_pos: int, max_memory: int | None, what: str) -> int:
    """How many prompts one chunk may hold within `max_memory` bytes (default 1 GiB); refused before anything runs
    when a single prompt does not fit."""
    if max_memory is not None and per_prompt > max_memory:
        raise InterpError(
            f"{what} needs about {per_prompt / 2**20:.1f} MiB per prompt of {n_pos} tokens, over the "
            f"budget of {max_memory / 2**20:.1f} MiB"
        )
    return max(1, min(n_batch, (max_memory or DEFAULT_MEMORY) // per_prompt))


def embed(tf: Transformer, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
    """The input node's output: token plus position embeddings."""
    return tf.W_E[tokens] + tf.W_pos[: tokens.shape[1]]


def edge_forward(
    tf: Transformer,
    graph: Graph,
    embeddings: Float[Tensor, "batch pos d_model"],
    read_positions: Int[Tensor, "batch n_read"],
    replaced: Bool[Tensor, "n_writers n_readers"] | None = None,
    replacement: Float[Tensor, "batch pos n_writers d_model"] | Float[Tensor, "n_writers d_model"] | None = None,
    record_writers: bool = False,
    expose_readers: bool = False,
) -> EdgeRun:
    """The forward from `embeddings` where the edges in `replaced` carry `replacement` writer outputs instead of
    this run's (none replaced: the model's own forward). `expose_readers` makes each reader's input its own node
    of the autograd graph (for gradients with respect to it)."""
    n_batch, n_pos, d_model = embeddings.shape
    H = graph.n_heads
    cutting = replaced is not None and bool(replaced.any())
    writers = embeddings.new_empty(n_batch, n_pos, graph.n_writers, d_model) if (cutting or record_writers) else None
    exposed: list[Tensor] = []

    def write(index: int | slice, value: Tensor) -> None:
        if writers is not None:
            writers[:, :, index] = value.detach() if expose_readers else value

    def reader_inputs(residual: Tensor, first: int, count: int) -> Float[Tensor, "batch pos count d_model"]:
        """The own residual of readers first..first+count (they share their writers)."""
        n_before = graph.writers_before(first)
        mask = replaced[:n_before, first : first + count].to(residual.dtype) if cutting else None
        if mask is None or not mask.any():
            own = residual[:, :, None].expand(n_batch, n_pos, count, d_model)
        else:
            # Sum over whichever set is smaller: the replaced writers' differences added to this run's residual,
            # or the kept writers' taken from the residual of every writer replaced (the same sum, fewer terms).
            if int((1 - mask).any(1).sum()) < int(mask.any(1).sum()):
                residual, mask = replaced_residual, mask - 1
            rows = mask.any(1).nonzero()[:, 0]
            difference = replacement_rows(rows) - writers[:, :, rows]
            own = residual[:, :, None] + torch.einsum("bpfd,fr->bprd", difference, mask[rows])
        if expose_readers:  # its own node: gradients with respect to it are those through this reader alone
            own = own.view_as(own) if own.requires_grad else own.clone().requires_grad_()
            exposed.append(own)
        return own

    def replacement_rows(rows: Tensor | slice) -> Tensor:
        part = replacement[..., rows, :]
        return part if part.ndim == 4 else part.expand(n_batch, n_pos, *part.shape)

    x = embeddings
    write(0, x)
    replaced_residual = replacement_rows(slice(0, 1))[:, :, 0] if cutting else None  # every writer replaced
    positions = torch.arange(n_pos, device=x.device)
    for layer, weights in enumerate(tf.layers):
        # The residuals and writers stay on the embedding's device; each layer computes on its own (device maps).
        own = reader_inputs(x, graph.head_reader(layer, 0, "q"), 3 * H)
        if own.stride(2) == 0 and not expose_readers:  # every head reads the same residual: normalise it once
            own = own[:, :, :1]
        normed = (
            tf.norm(own.to(tf.device(layer)), weights.ln1)
            .expand(n_batch, n_pos, 3 * H, d_model)
            .reshape(n_batch, n_pos, 3, H, d_model)
        )
        q, k, v = (
            torch.einsum("bphd,dhe->bphe", normed[:, :, i], W.reshape(d_model, H, -1)) + b.reshape(H, -1)
            for i, (W, b) in enumerate(
                ((weights.W_Q, weights.b_Q), (weights.W_K, weights.b_K), (weights.W_V, weights.b_V))
            )
        )
        results = torch.einsum("bphe,hed->bphd", attend(q, k, v, positions)[0], weights.W_O).to(x.device)
        b_O = weights.b_O.to(x.device)
        write(slice(graph.head_writer(layer, 0), graph.mlp_writer(layer)), results)
        x = x + results.sum(2) + b_O
        if cutting:
            heads = slice(graph.head_writer(layer, 0), graph.mlp_writer(layer))
            replaced_residual = replaced_residual + replacement_rows(heads).sum(2) + b_O
        mlp_out = tf.mlp(layer, reader_inputs(x, graph.mlp_reader(layer), 1)[:, :, 0]).to(x.device)
        write(graph.mlp_writer(layer), mlp_out)
        x = x + mlp_out
        if cutting:
            replaced_residual = (
                replaced_residual
                + replacement_rows(slice(graph.mlp_writer(layer), graph.mlp_writer(layer) + 1))[:, :, 0]
            )
    final = reader_inputs(x, graph.logits_reader, 1)[:, :, 0]
    return EdgeRun(tf.logits(take_positions(final, read_positions)), writers, exposed)


def mean_writers(
    tf: Transformer, graph: Graph, tokens: Int[Tensor, "batch pos"], last_positions: Int[Tensor, " batch"]
) -> Float[Tensor, "n_writers d_model"]:
    """Each writer's output averaged over the prompts and their positions up to each prompt's last read one
    (later positions, padding in a right-padded batch, are left out)."""
    with torch.inference_mode():
        run = edge_forward(tf, graph, embed(tf, tokens), last_positions[:, None], record_writers=True)
    counted = (torch.arange(tokens.shape[1], device=tokens.device)[None] <= last_positions[:, None]).to(
        run.writers.dtype
    )
    return torch.einsum("bpfd,bp->fd", run.writers, counted) / counted.sum()


def replacement_writers(
    tf: Transformer,
    graph: Graph,
    intervention: str,
    corrupt_tokens: Tensor,
    read_positions: Tensor,
    mean_tokens: Tensor | None = None,
) -> Tensor:
    """What a cut edge carries: the writers' outputs on the corrupted prompts ("patching", [batch, pos, writers,
    d_model]), their mean ("mean", [writers, d_model]) over every position of `mean_tokens`, or by default over
    the corrupted prompts up to their last read position, or zero ("zero")."""
    if intervention == "patching":
        with torch.inference_mode():
            return edge_forward(tf, graph, embed(tf, corrupt_tokens), read_positions, record_writers=True).writers
    if intervention == "mean":
        if mean_tokens is None:
            return mean_writers(tf, graph, corrupt_tokens, read_positions.max(1).values)
        return mean_writers(
            tf, graph, mean_tokens, torch.full((len(mean_tokens),), mean_tokens.shape[1] - 1, device=mean_tokens.device)
        )
    if intervention == "zero":
        return torch.zeros(graph.n_writers, tf.W_E.shape[1], device=tf.W_E.device, dtype=tf.W_E.dtype)
    raise InterpError(f"unknown intervention {intervention!r}; use one of {', '.join(INTERVENTIONS)}")
