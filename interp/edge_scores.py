"""Edge scores over a dataset of clean/corrupted pairs: EAP, EAP-IG and exact edge patching.

Every method scores the same quantity, the change of the metric (a mean over the prompts) when one edge alone
carries its replacement on the clean prompts (`interp.edge_forward`; MIB's and EAP-IG's convention):
- exact ("exact"): that run itself, one per edge, batched on the patching engine: each edge's variant starts
  from the clean run's residual at its reader's layer (`interp.engine.Cell`), chunked to a memory budget;
- EAP ("eap", Syed et al. 2023): its first-order estimate, (replacement - clean output of the writer) . (gradient
  of the metric with respect to the reader's own input on the clean run), summed over positions: one forward on
  the corrupted prompts, one forward and one backward on the clean ones;
- EAP-IG ("eap-ig", Hanna et al. 2024, on the inputs): the same difference times the gradient averaged over `steps`
  points on the line from the corrupted to the clean input embeddings, at k / steps for k = 0..steps-1 as EAP-IG's
  code takes them (the k = 0 run is the corrupted one, and gives the writers' corrupted outputs).
Prompts go through EAP and EAP-IG in chunks sized to `max_memory`; a chunk's gradient is taken with the other
prompts' logits held at their clean values, which is exact for metrics that average over prompts (the logit
difference, MIB's metrics).

With a per-prompt metric (`logit_diff_metric(..., per_prompt=True)`) every method keeps one score per prompt and
edge (`EdgeScores.per_prompt`): exact, each prompt's own change; EAP and EAP-IG, the difference times the gradient
of that prompt's own metric. Their mean over prompts is the score of the mean metric.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm import tqdm

from interp.edge_forward import INTERVENTIONS, edge_forward, embed, prompts_per_chunk, replacement_writers
from interp.engine import Cell, Run, Transformer, attend, check_tokens, evaluate_cells, row_budget, row_bytes, run_bytes
from interp.errors import InterpError
from interp.graph import Graph
from interp.metric_reader import Metric, make_reader

METHODS = ("eap", "eap-ig", "exact")
EXACT_BLOCK = 512  # edges evaluated between two progress updates of exact patching


@dataclass
class EdgeScores:
    """Scores [n_writers, n_readers] (0 off the graph's edges; NaN for edges left unscored by exact patching), with
    a per-prompt metric also per prompt [n_writers, n_readers, n_prompts] (their mean over the last axis), and how
    they were made."""

    graph: Graph
    scores: Float[Tensor, "n_writers n_readers"]
    method: str
    intervention: str
    steps: int
    clean_metric: float
    n_prompts: int
    chunk_prompts: int  # prompts per chunk (EAP, EAP-IG) or patched variants per chunk (exact, the largest)
    memory_estimate: int  # bytes the chunks were sized to
    peak_memory: int | None  # bytes, measured on CUDA
    seconds: float
    per_prompt: Float[Tensor, "n_writers n_readers n_prompts"] | None = None


def scoring_bytes_per_prompt(tf: Transformer, graph: Graph, n_pos: int, itemsize: int) -> int:
    """Working bytes one prompt adds to EAP / EAP-IG: the writers' clean, replacement and difference outputs, the
    readers' gradients and their running sum, and the autograd graph of one forward (each head's q, k, v inputs
    normalised on their own, q, k, v, scores and pattern, head results, the MLP's hidden layer)."""
    d_model, d_mlp, H = tf.W_E.shape[1], tf.layers[0].W_in.shape[1], graph.n_heads
    per_layer = 9 * H * d_model + 3 * H * tf.d_head + 2 * H * n_pos + H * d_model + 6 * d_model + 3 * d_mlp
    per_position = 3 * graph.n_writers * d_model + 2 * graph.n_readers * d_model + graph.n_layers * per_layer
    return itemsize * n_pos * per_position


def edge_scores(
    model,
    clean_tokens,
    corrupt_tokens,
    metric: Metric | Callable,
    method: str = "eap-ig",
    intervention: str = "patching",
    steps: int = 5,
    mean_tokens=None,
    edges: Sequence[str] | None = None,
    max_memory: int | None = None,
    quiet: bool = True,
    prompts: Sequence[int] | None = None,
) -> EdgeScores:
    """Every edge's score over the pairs (see the module's docstring). metric: a `Metric` or a function of the
    full logits. intervention: what a cut edge carries, "patching" (its writer's output on the paired corrupted
    prompt), "mean" (its mean over `mean_tokens`, default the corrupted prompts) or "zero". edges: for "exact",
    the edge names to patch (default all). max_memory: bytes of working memory (None: 1 GiB for EAP / EAP-IG, the
    patching engine's default for exact); refused before running when one prompt (one variant) does not fit.
    prompts: for EAP and EAP-IG, the prompts whose terms are summed (default all): a worker's share, the metric
    still reading every prompt; the shares' scores add up to the whole (per prompt: 0 outside the share)."""
    if method not in METHODS:
        raise InterpError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if intervention not in INTERVENTIONS:
        raise InterpError(f"unknown intervention {intervention!r}; use one of {', '.join(INTERVENTIONS)}")
    if method == "eap-ig" and intervention != "patching":
        raise InterpError(
            "EAP-IG integrates between the corrupted and the clean inputs: it needs intervention 'patching'"
        )
    if method == "eap-ig" and steps < 1:
        raise InterpError(f"EAP-IG needs at least one step, not {steps}")
    if edges is not None and method != "exact":
        raise InterpError("only exact patching scores a chosen set of edges; EAP and EAP-IG score them all at once")
    if prompts is not None and method == "exact":
        raise InterpError("exact patching's score of an edge is one run over all prompts: share its edges out")
    clean_tokens, corrupt_tokens = check_tokens(model, clean_tokens, corrupt_tokens)
    reader = make_reader(metric, *clean_tokens.shape, model.cfg.device)
    clean_tokens, corrupt_tokens = (t[:, : reader.n_pos_needed] for t in (clean_tokens, corrupt_tokens))
    tf, graph = Transformer(model, reader.token_ids), Graph.of(model)
    if mean_tokens is not None:
        mean_tokens = torch.as_tensor(mean_tokens, dtype=torch.long, device=model.cfg.device)
    on_cuda = str(model.cfg.device).startswith("cuda")
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if method == "exact":
        scores, clean_metric, chunk, memory = exact_scores(
            tf, graph, clean_tokens, corrupt_tokens, reader, intervention, mean_tokens, edges, max_memory, quiet
        )
    else:
        scores, clean_metric, chunk, memory = attribution_scores(
            tf,
            graph,
            clean_tokens,
            corrupt_tokens,
            reader,
            method,
            intervention,
            steps,
            mean_tokens,
            max_memory,
            quiet,
            prompts,
        )
    peak = torch.cuda.max_memory_allocated() if on_cuda else None
    per_prompt = scores.cpu() if scores.ndim == 3 else None
    return EdgeScores(
        graph,
        scores.cpu() if per_prompt is None else per_prompt.mean(-1),
        method,
        intervention,
        steps if method == "eap-ig" else 1,
        clean_metric,
        len(clean_tokens),
        chunk,
        memory,
        peak,
        time.perf_counter() - start,
        per_prompt,
    )


def attribution_scores(
    tf,
    graph,
    clean_tokens,
    corrupt_tokens,
    reader,
    method,
    intervention,
    steps,
    mean_tokens,
    max_memory,
    quiet,
    prompts=None,
) -> tuple[Tensor, float, int, int]:
    n_batch, n_pos = clean_tokens.shape
    per_prompt = scoring_bytes_per_prompt(tf, graph, n_pos, tf.W_E.element_size())
    chunk = prompts_per_chunk(per_prompt, n_batch, n_pos, max_memory, "edge scoring")
    fixed = (
        None
        if intervention == "patching"
        else replacement_writers(tf, graph, intervention, corrupt_tokens, reader.positions, mean_tokens)
    )
    clean_embeddings, corrupt_embeddings = embed(tf, clean_tokens), embed(tf, corrupt_tokens)
    every = torch.arange(n_batch, device=clean_tokens.device)
    chunks = (every if prompts is None else torch.as_tensor(list(prompts), device=every.device)).split(chunk)
    whole = len(chunks) == 1 and len(chunks[0]) == n_batch  # one chunk of every prompt: the metric sees only it
    if not whole:  # each chunk's metric sees the other prompts' clean logits
        with torch.inference_mode():
            clean_logits = torch.cat(
                [
                    edge_forward(tf, graph, clean_embeddings[rows], reader.positions[rows]).logits
                    for rows in every.split(chunk)
                ]
            )
    scores = None  # [n_writers, n_readers], with a per-prompt metric [..., n_batch]
    alphas = [1.0] if method == "eap" else [k / steps for k in range(steps)]
    bar = tqdm(total=len(chunks) * (len(alphas) + 1), desc=f"{method} edge scores", disable=quiet)
    clean_metric = 0.0
    for rows in chunks:

        def forward(embeddings, expose_readers):
            return edge_forward(
                tf, graph, embeddings, reader.positions[rows], record_writers=True, expose_readers=expose_readers
            )

        def metric_of(logits):
            if whole:
                return reader(logits)
            full = clean_logits.clone()
            full[rows] = logits
            return reader(full)

        outputs = {}
        with torch.inference_mode():  # EAP-IG: the clean writers (its k = 0 run gives the corrupted ones)
            if method == "eap-ig":
                clean_run = forward(clean_embeddings[rows], False)
                outputs["clean"], clean_metric = clean_run.writers, float(metric_of(clean_run.logits).mean())
            elif fixed is None:
                outputs["corrupt"] = forward(corrupt_embeddings[rows], False).writers
        bar.update()
        gradient_sum = None
        for k, alpha in enumerate(alphas):
            embeddings = corrupt_embeddings[rows] + alpha * (clean_embeddings[rows] - corrupt_embeddings[rows])
            with torch.enable_grad():
                run = forward(embeddings.detach(), True)
                value = metric_of(run.logits)  # per prompt: their sum's gradient is each prompt's own
                gradients = torch.autograd.grad(value.sum(), run.reader_inputs)
            gradient = torch.cat(gradients, dim=2)
            gradient_sum = gradient if gradient_sum is None else gradient_sum + gradient
            if alpha == 1.0:
                clean_metric = float(value.detach().mean())
            if k == 0:  # EAP: the clean run; EAP-IG: the corrupted one
                outputs["corrupt" if method == "eap-ig" else "clean"] = run.writers
            bar.update()
        replacement = outputs["corrupt"] if fixed is None else fixed
        if scores is None:
            scores = torch.zeros(graph.n_writers, graph.n_readers, *value.shape, device=tf.W_E.device)
        add_scores(
            scores, graph, replacement - outputs["clean"], gradient_sum / len(alphas), rows if value.ndim else None
        )
    bar.close()
    return scores, clean_metric, chunk, per_prompt * chunk


def add_scores(
    scores: Tensor,
    graph: Graph,
    difference: Float[Tensor, "batch pos n_writers d_model"],
    gradient: Float[Tensor, "batch pos n_readers d_model"],
    rows: Tensor | None = None,
) -> None:
    """scores[writer, reader] += difference . gradient summed over positions and d_model, and over prompts, or with
    `rows` (the batch's prompts) kept per prompt in scores[writer, reader, rows]; block by block over readers that
    share their writers (only the graph's edges are computed)."""
    blocks = []
    for layer in range(graph.n_layers):
        blocks += [(graph.head_reader(layer, 0, "q"), 3 * graph.n_heads), (graph.mlp_reader(layer), 1)]
    for first, count in blocks + [(graph.logits_reader, 1)]:
        n_before = graph.writers_before(first)
        target = (slice(0, n_before), slice(first, first + count)) + (() if rows is None else (rows,))
        scores[target] += torch.einsum(
            "bpfd,bprd->fr" + ("" if rows is None else "b"),
            difference[:, :, :n_before],
            gradient[:, :, first : first + count],
        )


# ----------------------------------------------------------------------------------------------------------------
# Exact edge patching on the patching engine


def writer_output(tf: Transformer, graph: Graph, run: Run, writer: int) -> Float[Tensor, "batch pos d_model"]:
    """A writer's output in a recorded engine run (keeping resid, z and mlp_out)."""
    if writer == 0:
        return run.resid[0]
    layer, offset = divmod(writer - 1, graph.n_heads + 1)
    if offset == graph.n_heads:
        return run.mlp_out[layer]
    return run.z[layer][:, :, offset] @ tf.layers[layer].W_O[offset]


def exact_scores(
    tf, graph, clean_tokens, corrupt_tokens, reader, intervention, mean_tokens, edges, max_memory, quiet
) -> tuple[Tensor, float, int, int]:
    """Each edge's true effect: the clean run with that edge alone carrying its replacement, less the clean run
    (per prompt with a per-prompt metric)."""
    n_batch, n_pos = clean_tokens.shape
    keep = ["resid", "q", "k", "v", "z", "mlp_out"]
    itemsize = tf.W_E.element_size()
    # the clean run, the corrupted one (or the constant replacement), every writer's difference
    fixed = (
        run_bytes(tf, n_batch, n_pos, keep, itemsize) * (2 if intervention == "patching" else 1)
        + itemsize * graph.n_writers * n_batch * n_pos * tf.W_E.shape[1]
    )
    max_rows = row_budget(tf, reader, n_batch, n_pos, fixed, max_memory, itemsize)
    chosen = graph.edge_list() if edges is None else [graph.edge_index(name) for name in edges]
    with torch.inference_mode():
        clean = tf.run(clean_tokens, reader, keep)
        if intervention == "patching":
            corrupt = tf.run(corrupt_tokens, reader, ["resid", "z", "mlp_out"])

            def replacement(writer):
                return writer_output(tf, graph, corrupt, writer)
        else:
            constant = replacement_writers(tf, graph, intervention, corrupt_tokens, reader.positions, mean_tokens)

            def replacement(writer):
                return constant[writer].expand(n_batch, n_pos, -1)

        differences: dict[int, Tensor] = {}

        def difference(writers: list[int], device: torch.device) -> Float[Tensor, "rows batch pos d_model"]:
            for writer in writers:  # kept on the embedding's device, wherever the writer's layer computes
                if writer not in differences:
                    output = writer_output(tf, graph, clean, writer)
                    differences[writer] = (replacement(writer).to(output.device) - output).to(tf.home)
            return torch.stack([differences[writer] for writer in writers]).to(device)

        first_read = int(reader.positions.min())

        def first_changed(writers: list[int]) -> int:
            """The first position where a writer's replacement differs from its clean output on some prompt (no
            later than the first position read)."""
            difference(writers, tf.home)  # computed and cached
            changed = torch.stack([differences[writer].ne(0).any(-1).any(0) for writer in writers]).any(0)
            return min(int(changed.float().argmax()) if changed.any() else first_read, first_read)

        scores = torch.full((graph.n_writers, graph.n_readers, *clean.value.shape), float("nan"), device=tf.W_E.device)
        block = max(EXACT_BLOCK, max_rows(0))
        with tqdm(total=len(chosen), desc="exact edge patching", unit="edge", disable=quiet) as bar:
            for first in range(0, len(chosen), block):  # blocks of edges, so that progress can be shown
                edges_here = chosen[first : first + block]
                cells = edge_cells(tf, graph, clean, edges_here, difference, first_changed)
                values = evaluate_cells(tf, clean, reader, cells, len(edges_here), max_rows)
                index = torch.tensor(edges_here, device=scores.device)
                scores[index[:, 0], index[:, 1]] = values - clean.value
                bar.update(len(edges_here))
    rows = max_rows(0)
    memory = fixed + rows * row_bytes(tf, n_batch, n_pos, 0, reader.positions.shape[1], itemsize)
    return scores, float(clean.value.mean()), rows, memory


def edge_cells(
    tf: Transformer,
    graph: Graph,
    clean: Run,
    chosen: list[tuple[int, int]],
    difference: Callable[[list[int], torch.device], Tensor],
    first_changed: Callable[[list[int]], int] = lambda writers: 0,
) -> list[Cell]:
    """One cell per reader group: the edges into a layer's heads join at its resid_mid (the head recomputed with
    the patched input), into its MLP at its resid_post, into the logits at the final residual. A cell starts at
    the first position where one of its writers' replacements differs from the clean output (`first_changed`):
    the positions before it are the clean run's, and are never computed."""
    groups: dict[tuple[int, str], list[int]] = {}
    for i, (_, reader) in enumerate(chosen):
        if reader == graph.logits_reader:
            key = (graph.n_layers, "logits")
        else:
            layer, offset = divmod(reader, 3 * graph.n_heads + 1)
            key = (layer, "mlp" if offset == 3 * graph.n_heads else "heads")
        groups.setdefault(key, []).append(i)
    cells = []
    for (layer, kind), members in sorted(groups.items()):
        writers = [chosen[i][0] for i in members]
        start = first_changed(writers)
        if kind == "logits":

            def make(rows, writers=writers, start=start):
                resid = clean.resid[2 * graph.n_layers]
                return (resid[None] + difference(writers[rows], resid.device))[:, :, start:]

            cells.append(Cell(2 * graph.n_layers, start, members, make))
        elif kind == "mlp":

            def make(rows, writers=writers, layer=layer, start=start):
                patched = tf.mlp(layer, clean.resid[2 * layer + 1][None] + difference(writers[rows], tf.device(layer)))
                return (clean.resid[2 * layer + 2][None] + patched - clean.mlp_out[layer][None])[:, :, start:]

            cells.append(Cell(2 * layer + 2, start, members, make))
        else:
            parts = [divmod(chosen[i][1] - layer * (3 * graph.n_heads + 1), graph.n_heads) for i in members]

            def make(rows, writers=writers, layer=layer, parts=parts, start=start):
                change = head_change(tf, clean, layer, parts[rows], difference(writers[rows], tf.device(layer)))
                return (clean.resid[2 * layer + 1][None] + change)[:, :, start:]

            cells.append(Cell(2 * layer + 1, start, members, make))
    return cells


def head_change(
    tf: Transformer,
    clean: Run,
    layer: int,
    parts: list[tuple[int, int]],
    difference: Float[Tensor, "rows batch pos d_model"],
) -> Float[Tensor, "rows batch pos d_model"]:
    """Each row's change of resid_mid when head h's input i (0 q, 1 k, 2 v) reads the clean residual plus its
    row of `difference`: the head recomputed with that input, times W_O."""
    weights = tf.layers[layer]
    inputs, heads = (torch.tensor(column, device=difference.device) for column in zip(*parts))
    d_model = difference.shape[-1]
    W = torch.stack([weights.W_Q, weights.W_K, weights.W_V]).reshape(3, d_model, tf.n_heads, tf.d_head)
    b = torch.stack([weights.b_Q, weights.b_K, weights.b_V]).reshape(3, tf.n_heads, tf.d_head)
    normed = tf.norm(clean.resid[2 * layer][None] + difference, weights.ln1)
    projected = torch.einsum("rbpd,rde->rbpe", normed, W[inputs, :, heads]) + b[inputs, heads][:, None, None]
    q, k, v = (getattr(clean, name)[layer][:, :, heads].permute(2, 0, 1, 3).clone() for name in ("q", "k", "v"))
    for i, tensor in enumerate((q, k, v)):
        tensor[inputs == i] = projected[inputs == i]
    positions = torch.arange(q.shape[2], device=q.device)
    z = attend(q[:, :, :, None], k[:, :, :, None], v[:, :, :, None], positions)[0][:, :, :, 0]
    z_clean = clean.z[layer][:, :, heads].permute(2, 0, 1, 3)
    return torch.einsum("rbpe,red->rbpd", z - z_clean, weights.W_O[heads])
