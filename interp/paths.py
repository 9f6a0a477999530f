"""Path patching over the edge graph: how much of the metric flows from each sender directly into the receivers.

For each sender (a node of `interp.graph.Graph`: input, a{l}.h{h}, m{l}) the clean prompts run with the edges from
the sender into the receivers carrying the sender's output on the paired corrupted prompt (intervention
"patching"; or its mean, or zero), every other edge its clean value; what the receivers then compute reaches the
rest of the model as usual. This is path patching as the greater-than paper and the edge-level literature use it
(the sender's direct connection to each receiver), and it is edge patching of a set of edges
(`interp.discovery.circuit_values`), exact.

Receivers are graph readers: "logits", "m11", "a9.h1<q>" (one input of a head) or "a9.h1" (its q, k and v).
Wang et al.'s Algorithm 1, where the sender's effect also passes through every MLP after it (its own layer's
included), is `interp.patching.path_patch` (what `interp ioi` runs).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from interp.discovery import circuit_values
from interp.edge_scores import edge_scores
from interp.errors import InterpError
from interp.graph import Graph
from interp.workers import Workers


@dataclass
class PathPatching:
    senders: list[str]
    receivers: list[str]  # graph reader names, heads expanded to their q, k, v
    effects: Float[Tensor, " n_senders *prompt"]  # the metric's change when a sender's paths carry its replacement


def reader_indices(graph: Graph, receivers: Sequence[str]) -> list[int]:
    """Graph reader indices of receiver names; a head without <q|k|v> stands for all three."""
    indices = []
    for name in receivers:
        names = [f"{name}<{part}>" for part in "qkv"] if name.startswith("a") and "<" not in name else [name]
        for one in names:
            index = graph.reader_index(one) if re.fullmatch(r"logits|m\d+|a\d+\.h\d+<[qkv]>", one) else None
            if index is None:
                raise InterpError(
                    f"unknown receiver {name!r}: use logits, m<layer>, a<layer>.h<head> or a<layer>.h<head><q|k|v> "
                    f"within {graph.n_layers} layers of {graph.n_heads} heads"
                )
            indices.append(index)
    if not indices:
        raise InterpError("path patching needs at least one receiver")
    return sorted(set(indices))


def writer_indices(graph: Graph, senders: Sequence[str]) -> list[int]:
    indices = []
    for name in senders:
        index = graph.writer_index(name) if re.fullmatch(r"input|m\d+|a\d+\.h\d+", name) else None
        if index is None:
            raise InterpError(
                f"unknown sender {name!r}: use input, m<layer> or a<layer>.h<head> within {graph.n_layers} layers "
                f"of {graph.n_heads} heads"
            )
        indices.append(index)
    return indices


def path_patch_edges(
    model,
    clean_tokens,
    corrupt_tokens,
    metric,
    receivers: Sequence[str],
    senders: Sequence[str] | None = None,
    intervention: str = "patching",
    max_memory: int | None = None,
    workers: Workers | None = None,
) -> PathPatching:
    """The change of the metric when each sender's edges into the receivers carry its replacement (see the module's
    text). `senders` default to every node with an edge into some receiver; a named sender without one is an error.
    With one receiver each sender's path is one edge: its exact edge score (`interp.edge_scores`, on the patching
    engine, from the receiver's layer on); otherwise one run of the edge graph per sender."""
    graph = Graph.of(model)
    readers = reader_indices(graph, receivers)
    into = graph.real[:, readers].any(1)
    if senders is None:
        writers = torch.nonzero(into).flatten().tolist()
    else:
        writers = writer_indices(graph, senders)
        unconnected = [name for name, writer in zip(senders, writers) if not into[writer]]
        if unconnected:
            raise InterpError(f"{unconnected[0]} writes to none of the receivers (it is not before them)")
    names, reader_names = graph.writer_names(), graph.reader_names()
    if len(readers) == 1:
        edges = [f"{names[writer]}->{reader_names[readers[0]]}" for writer in writers]
        scored = edge_scores(
            model, clean_tokens, corrupt_tokens, metric, "exact", intervention, edges=edges, max_memory=max_memory
        )
        scores = scored.scores if scored.per_prompt is None else scored.per_prompt
        effects = scores[writers, readers[0]]
    else:
        masks = [graph.real]
        for writer in writers:
            mask = graph.real.clone()
            mask[writer, readers] = False
            masks.append(mask)
        clean, *values = circuit_values(
            model, clean_tokens, corrupt_tokens, metric, masks, intervention, None, max_memory, workers
        )
        effects = torch.stack(values) - clean
    return PathPatching([names[w] for w in writers], [reader_names[r] for r in readers], effects)
