"""Edge-level circuit discovery and MIB's circuit evaluation.

    found = discover(model, clean, corrupt, metric, method="eap-ig")       # all of the below in one call
    scores = edge_scores(model, clean, corrupt, metric, method="eap-ig")   # interp.edge_scores
    circuit = Circuit.of_scores(scores.graph, scores.scores).top_n(500)    # interp.graph
    faithfulness(model, circuit, clean, corrupt, metric)
    curve = faithfulness_curve(model, scores, clean, corrupt, metric)      # MIB's budgets, CPR, CMD

A circuit runs on the clean prompts with every edge outside it carrying its replacement (`interp.edge_forward`:
the writer's output on the paired corrupted prompt, its mean, or zero). Faithfulness, as MIB computes it, is
(circuit - empty circuit) / (full model - empty circuit) of the metric averaged over the prompts; the faithfulness
curve keeps the top pct of edges by |score| (then pruned, MIB's `apply_topn`) for pct in MIB's budgets; CPR is the
trapezoidal area under it over pct (higher is better), CMD the area of |1 - faithfulness| (lower is better).
ROC AUC ranks edges (or nodes) by |score| against a reference circuit's membership.

With a per-prompt metric (`logit_diff_metric(..., per_prompt=True)`) every number keeps one value per prompt beside
its mean: the edge scores (`EdgeScores.per_prompt`), the metric of every circuit run (`circuit_values`), the curve's
(`FaithfulnessCurve.per_prompt`) and the chosen circuit's; `circuits.discover_sureness` resamples them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.edge_forward import INTERVENTIONS, edge_forward, embed, prompts_per_chunk, replacement_writers
from interp.edge_scores import EdgeScores, edge_scores
from interp.engine import Transformer, check_tokens
from interp.errors import InterpError
from interp.graph import Circuit, Graph, load_circuit
from interp.metric_reader import Metric, make_reader
from interp.metrics import normalised
from interp.workers import Workers, fill_in

__all__ = [
    "discover",
    "Discovery",
    "edge_scores",
    "EdgeScores",
    "Circuit",
    "Graph",
    "load_circuit",
    "circuit_metrics",
    "circuit_values",
    "faithfulness",
    "faithfulness_curve",
    "FaithfulnessCurve",
    "roc_auc",
    "node_scores",
    "reference_aucs",
    "MIB_BUDGETS",
]

MIB_BUDGETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # fractions of the graph's edges


def circuit_metrics(
    model,
    clean_tokens,
    corrupt_tokens,
    metric: Metric | Callable,
    circuits: Sequence[Bool[Tensor, "n_writers n_readers"] | Circuit],
    intervention: str = "patching",
    mean_tokens=None,
    max_memory: int | None = None,
    workers: Workers | None = None,
) -> list[float]:
    """The metric of each circuit (`circuit_values`), averaged over prompts for a per-prompt metric."""
    return [
        float(value.mean())
        for value in circuit_values(
            model, clean_tokens, corrupt_tokens, metric, circuits, intervention, mean_tokens, max_memory, workers
        )
    ]


def circuit_values(
    model,
    clean_tokens,
    corrupt_tokens,
    metric: Metric | Callable,
    circuits: Sequence[Bool[Tensor, "n_writers n_readers"] | Circuit],
    intervention: str = "patching",
    mean_tokens=None,
    max_memory: int | None = None,
    workers: Workers | None = None,
) -> list[Float[Tensor, "*prompt"]]:
    """The metric (a scalar, or [n_prompts] for a per-prompt metric) of the model run on the clean prompts with only
    each circuit's edges (a membership matrix or a `Circuit`) carrying their own values, every other edge its
    replacement. Prompts are chunked to `max_memory` bytes (default 1 GiB); the replacement is computed once per
    chunk for every circuit. `workers` share the circuits out."""
    if workers is not None and workers.count > 1:
        masks = [circuit.in_graph if isinstance(circuit, Circuit) else circuit for circuit in circuits]

        def share(replica, shard: list[Tensor]) -> list[Tensor]:
            return circuit_values(
                replica, clean_tokens, corrupt_tokens, metric, shard, intervention, mean_tokens, max_memory
            )

        return workers.map_items(share, masks, "circuit runs")
    if intervention not in INTERVENTIONS:
        raise InterpError(f"unknown intervention {intervention!r}; use one of {', '.join(INTERVENTIONS)}")
    clean_tokens, corrupt_tokens = check_tokens(model, clean_tokens, corrupt_tokens)
    reader = make_reader(metric, *clean_tokens.shape, model.cfg.device)
    clean_tokens, corrupt_tokens = (t[:, : reader.n_pos_needed] for t in (clean_tokens, corrupt_tokens))
    tf, graph = Transformer(model, reader.token_ids), Graph.of(model)
    masks = []
    for circuit in circuits:
        mask = circuit.in_graph if isinstance(circuit, Circuit) else torch.as_tensor(circuit, dtype=torch.bool)
        if mask.shape != graph.real.shape:
            raise InterpError(
                f"a circuit of shape {tuple(mask.shape)} does not fit this model's graph {tuple(graph.real.shape)}"
            )
        masks.append((graph.real & ~mask.cpu()).to(model.cfg.device))
    n_batch, n_pos = clean_tokens.shape
    itemsize = tf.W_E.element_size()
    per_prompt = 4 * itemsize * n_pos * graph.n_writers * tf.W_E.shape[1]  # writers, replacement, differences
    chunk = prompts_per_chunk(per_prompt, n_batch, n_pos, max_memory, "running a circuit")
    fixed = (
        None
        if intervention == "patching"
        else replacement_writers(tf, graph, intervention, corrupt_tokens, reader.positions, mean_tokens)
    )
    logits: list[list[Tensor]] = [[] for _ in masks]
    with torch.inference_mode():
        for rows in torch.arange(n_batch, device=clean_tokens.device).split(chunk):
            positions = reader.positions[rows]
            replacement = (
                fixed
                if fixed is not None
                else edge_forward(tf, graph, embed(tf, corrupt_tokens[rows]), positions, record_writers=True).writers
            )
            clean_embeddings = embed(tf, clean_tokens[rows])
            for i, replaced in enumerate(masks):
                logits[i].append(edge_forward(tf, graph, clean_embeddings, positions, replaced, replacement).logits)
        return [reader(torch.cat(parts)).cpu() for parts in logits]


def faithfulness(
    model,
    circuit: Circuit,
    clean_tokens,
    corrupt_tokens,
    metric,
    intervention: str = "patching",
    mean_tokens=None,
    max_memory: int | None = None,
) -> float:
    """(circuit - empty circuit) / (full model - empty circuit), MIB's normalisation."""
    graph = circuit.graph
    full, empty, value = circuit_metrics(
        model,
        clean_tokens,
        corrupt_tokens,
        metric,
        [graph.real, torch.zeros_like(graph.real), circuit],
        intervention,
        mean_tokens,
        max_memory,
    )
    return normalised_faithfulness(value, full, empty)


def normalised_faithfulness(value: float, full: float, empty: float) -> float:
    if full == empty:
        raise InterpError("the full model and the empty circuit give the same metric: faithfulness is undefined")
    return normalised(value, full, empty)


@dataclass
class FaithfulnessCurve:
    budgets: list[float]  # fractions of the graph's edges asked for
    n_edges: list[int]  # edges kept after pruning
    metrics: list[float]
    faithfulness: list[float]
    full_metric: float
    empty_metric: float
    cpr: float  # area under the curve over the budgets (higher is better)
    cmd: float  # area of |1 - faithfulness| over the budgets (lower is better)
    selection: str
    # with a per-prompt metric: "full", "empty" [n_prompts] and "circuits" [n_budgets, n_prompts]
    per_prompt: dict[str, np.ndarray] | None = field(default=None, repr=False)

    def as_dict(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "per_prompt"}


def area(budgets: Sequence[float], values: Sequence[float]) -> float:
    """Trapezoidal area over the budgets (MIB's `evaluate_area_under_curve`: x = the budget fractions)."""
    return sum((x2 - x1) * (y1 + y2) / 2 for x1, x2, y1, y2 in zip(budgets, budgets[1:], values, values[1:]))


def faithfulness_curve(
    model,
    scores: EdgeScores | Circuit,
    clean_tokens,
    corrupt_tokens,
    metric,
    budgets: Sequence[float] = MIB_BUDGETS,
    selection: str = "topn",
    intervention: str = "patching",
    mean_tokens=None,
    max_memory: int | None = None,
    workers: Workers | None = None,
) -> FaithfulnessCurve:
    """Faithfulness of the circuits of the top int(pct * n_edges) edges by |score| (selection "topn", MIB's
    default, or "greedy" from the logits), pruned, for pct in `budgets`; CPR and CMD over them."""
    circuit = scores if isinstance(scores, Circuit) else Circuit.of_scores(scores.graph, scores.scores)
    if selection not in ("topn", "greedy"):
        raise InterpError(f"unknown selection {selection!r}; use topn or greedy")
    if list(budgets) != sorted(budgets) or not all(0 < b <= 1 for b in budgets):
        raise InterpError("budgets are increasing fractions of the edges in (0, 1]")
    graph = circuit.graph
    select = circuit.top_n if selection == "topn" else circuit.greedy
    chosen = [select(int(budget * graph.n_edges)) for budget in budgets]
    runs = circuit_values(
        model,
        clean_tokens,
        corrupt_tokens,
        metric,
        [graph.real, torch.zeros_like(graph.real), *chosen],
        intervention,
        mean_tokens,
        max_memory,
        workers,
    )
    full, empty, *values = [float(run.mean()) for run in runs]
    faithful = [normalised_faithfulness(value, full, empty) for value in values]
    per_prompt = (
        None
        if runs[0].ndim == 0
        else {"full": runs[0].numpy(), "empty": runs[1].numpy(), "circuits": torch.stack(runs[2:]).numpy()}
    )
    return FaithfulnessCurve(
        list(budgets),
        [c.n_edges for c in chosen],
        values,
        faithful,
        full,
        empty,
        area(budgets, faithful),
        area(budgets, [abs(1 - f) for f in faithful]),
        selection,
        per_prompt,
    )


@dataclass
class Discovery:
    """What `discover` finds: every edge's score, the faithfulness curve, and the circuit chosen: `n_selected` edges
    by `selection` before pruning, and its metric per prompt with a per-prompt metric."""

    scores: EdgeScores
    curve: FaithfulnessCurve
    circuit: Circuit
    circuit_faithfulness: float
    rule: str  # how the circuit was chosen
    evaluation_seconds: float
    n_selected: int
    circuit_per_prompt: np.ndarray | None = None


def discover(
    model,
    clean_tokens,
    corrupt_tokens,
    metric: Metric | Callable,
    method: str = "eap-ig",
    top_n: int | None = None,
    selection: str = "topn",
    intervention: str = "patching",
    steps: int = 5,
    min_faithfulness: float = 0.9,
    mean_tokens=None,
    max_memory: int | None = None,
    quiet: bool = True,
    workers: Workers | None = None,
) -> Discovery:
    """Edge-level discovery on any dataset of pairs and metric: score every edge (`edge_scores`), measure the
    faithfulness curve at MIB's budgets, and choose the circuit: the top `top_n` edges, or by default those of the
    smallest budget whose faithfulness reaches `min_faithfulness` (every edge if none does). `workers` share the
    scoring (by prompts, or by edges for exact patching) and the curve's circuits out."""
    workers = workers or Workers(model)
    scores = shared_edge_scores(
        model,
        workers,
        clean_tokens,
        corrupt_tokens,
        metric,
        method,
        intervention,
        steps,
        mean_tokens,
        max_memory,
        quiet,
    )
    start = time.perf_counter()
    ranked = Circuit.of_scores(scores.graph, scores.scores)
    curve = faithfulness_curve(
        model,
        ranked,
        clean_tokens,
        corrupt_tokens,
        metric,
        selection=selection,
        intervention=intervention,
        mean_tokens=mean_tokens,
        max_memory=max_memory,
        workers=workers,
    )
    select = ranked.top_n if selection == "topn" else ranked.greedy
    if top_n is None:
        reached = [b for b, f in zip(curve.budgets, curve.faithfulness) if f >= min_faithfulness]
        budget = reached[0] if reached else 1.0
        n_selected, index = int(budget * scores.graph.n_edges), curve.budgets.index(budget)
        circuit, value = select(n_selected), curve.faithfulness[index]
        per_prompt = None if curve.per_prompt is None else curve.per_prompt["circuits"][index]
        rule = f"smallest MIB budget with faithfulness >= {min_faithfulness}: {budget:g} of the edges"
    else:
        n_selected, circuit = top_n, select(top_n)
        [run] = circuit_values(
            model, clean_tokens, corrupt_tokens, metric, [circuit], intervention, mean_tokens, max_memory
        )
        value = normalised_faithfulness(float(run.mean()), curve.full_metric, curve.empty_metric)
        per_prompt = None if run.ndim == 0 else run.numpy()
        rule = f"top {top_n} edges by |score| ({selection})"
    return Discovery(scores, curve, circuit, value, rule, time.perf_counter() - start, n_selected, per_prompt)


def shared_edge_scores(
    model,
    workers: Workers,
    clean_tokens,
    corrupt_tokens,
    metric,
    method: str,
    intervention: str,
    steps: int,
    mean_tokens,
    max_memory: int | None,
    quiet: bool,
) -> EdgeScores:
    """`edge_scores`, its work shared out: exact patching by edges (NaN outside a share), EAP and EAP-IG by prompts
    (their scores are sums over prompts; per prompt, each share's are 0 outside it)."""
    start = time.perf_counter()
    if method == "exact":

        def share(replica, edges: list[str]) -> EdgeScores:
            return edge_scores(
                replica,
                clean_tokens,
                corrupt_tokens,
                metric,
                method,
                intervention,
                steps,
                mean_tokens,
                edges=edges,
                max_memory=max_memory,
                quiet=quiet,
            )

        parts = workers.map(share, Graph.of(model).edge_names(), "exact edge patching")
        combine = fill_in
    else:

        def share(replica, prompts: list[int]) -> EdgeScores:
            return edge_scores(
                replica,
                clean_tokens,
                corrupt_tokens,
                metric,
                method,
                intervention,
                steps,
                mean_tokens,
                max_memory=max_memory,
                quiet=quiet,
                prompts=prompts,
            )

        parts = workers.map(share, range(len(clean_tokens)), f"{method} edge scores")

        def combine(shares: list[Tensor]) -> Tensor:
            return torch.stack(shares).sum(0)

    peaks = [part.peak_memory for part in parts if part.peak_memory is not None]
    per_prompt = None if parts[0].per_prompt is None else combine([part.per_prompt for part in parts])
    return replace(
        parts[0],
        scores=combine([part.scores for part in parts]),
        per_prompt=per_prompt,
        peak_memory=max(peaks) if peaks else None,
        seconds=time.perf_counter() - start,
    )


def roc_auc(scores: Tensor, positive: Tensor, among: Tensor | None = None) -> float:
    """Area under the ROC curve of |scores| separating `positive` from the rest (of `among`, default all):
    the probability that a positive outranks a negative, ties counted half."""
    among = torch.ones_like(positive, dtype=torch.bool) if among is None else among.bool()
    values, labels = scores.abs()[among].double(), positive.bool()[among]
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise InterpError("ROC AUC needs both members and non-members of the reference circuit")
    order = torch.argsort(values)
    ranks = torch.empty_like(values)
    sorted_values = values[order]
    # average ranks over ties
    unique, inverse, counts = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    ranks[order] = (ends - (counts.double() - 1) / 2)[inverse]
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def node_scores(circuit: Circuit) -> Tensor:
    """Each writer's score: the sum of |score| over its outgoing edges."""
    return circuit.scores.abs().masked_fill(~circuit.graph.real, 0).sum(1)


def reference_aucs(circuit: Circuit, reference_edges: Sequence[str]) -> dict:
    """Edge and node ROC AUC against a reference circuit's edges (nodes: the heads and MLPs that write into it;
    the input, always present, is left out)."""
    graph = circuit.graph
    positive = graph.mask(reference_edges)
    writers = positive.any(1)
    heads_and_mlps = torch.ones(graph.n_writers, dtype=torch.bool)
    heads_and_mlps[0] = False
    return {
        "edge_roc_auc": roc_auc(circuit.scores, positive, graph.real),
        "node_roc_auc": roc_auc(node_scores(circuit), writers, heads_and_mlps),
        "n_reference_edges": int(positive.sum()),
        "n_reference_nodes": int(writers[1:].sum()),
    }
