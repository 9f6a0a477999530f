"""Any task, every measurement: activation patching, path patching and circuit evaluation of a `Task` (a file in
any format `interp.task` reads, or a task interp builds: ioi, greater-than, capitals), with a named metric.

Each run keeps one value per prompt and its mean, with a bootstrap interval over prompts resampled within the
task's groups (`interp.stats`), and writes the task and the exact tokens run into its results, so that every
number can be recomputed from the file alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from interp.errors import InterpError
from interp.graph import Circuit, Graph, load_circuit
from interp.metric_reader import Metric
from interp.stats import Bootstrap, rounded
from interp.task import PAD, Task, TaskTokens, read_task
from interp.task_metrics import DESCRIPTIONS, LOWER_IS_BETTER, task_metric
from interp.workers import Workers

BUILTIN_TASKS = ("ioi", "greater-than", "capitals")


def load_task(spec: str, model, n: int | None = None, seed: int = 0) -> Task:
    """A task file, or one interp builds ("ioi": the IOI paper's p_IOI/p_ABC pairs; "greater-than": Hanna et
    al.'s; "capitals": Merullo et al.'s capital questions, each against another country's). `n`: the number of
    pairs built (default 100; greater-than 97), or the first n of a file (default all)."""
    if spec == "ioi":
        from interp.circuits.ioi import Protocol
        from interp.data.ioi import ioi_task

        return ioi_task(*Protocol().datasets(model, n or 100, seed))
    if spec == "capitals":
        from interp.data.capitals import capitals_task

        return capitals_task(n or 100, seed, model.tokenizer)
    if spec == "greater-than":
        from interp.data.greater_than import greater_than_task

        return greater_than_task(n or 97, seed, model.tokenizer)  # every YY from 02 to 98 once
    if not Path(spec).suffix:
        raise InterpError(
            f"unknown task {spec!r}: give a task file (.json, .jsonl, .csv) or one of {', '.join(BUILTIN_TASKS)}"
        )
    task = read_task(spec)
    if n is not None:
        if n < 1:
            raise InterpError(f"--n must be at least 1, not {n}")
        task.pairs = task.pairs[:n]
    return task


@dataclass
class Prepared:
    task: Task
    tokens: TaskTokens
    metric_name: str
    metric: Metric

    @property
    def lower_is_better(self) -> bool:
        return self.metric_name in LOWER_IS_BETTER

    def bootstrap(self, n_resamples: int, seed: int) -> Bootstrap | None:
        return Bootstrap.over(self.tokens.groups.tolist(), n_resamples, seed)

    def data(self) -> dict:
        """The task and the exact tokens run: enough to recompute every number."""
        return {
            **self.task.to_json(),
            "source": self.task.source,
            "source_format": self.task.format,
            "prepend_bos": self.tokens.prepend_bos,
            "pad_token_id": PAD,
            "clean_tokens": self.tokens.clean.tolist(),
            "corrupt_tokens": self.tokens.corrupt.tolist(),
            "end_positions": self.tokens.end.tolist(),
            "answer_ids": self.tokens.answers.tolist(),
            "wrong_answer_ids": self.tokens.wrong.tolist(),
        }

    def describe(self) -> dict:
        return {
            "task": self.task.name,
            "n_prompts": len(self.tokens),
            "metric_name": self.metric_name,
            "metric": DESCRIPTIONS[self.metric_name],
        }


def prepare(model, task: Task, metric: str | None = None, prepend_bos: bool | None = None) -> Prepared:
    """Tokenize the task for the model and resolve its metric (the one named, else the task's, else logit-diff)."""
    tokens = task.tokenize(model.tokenizer, prepend_bos, model.cfg.d_vocab, model.cfg.n_ctx)
    name = metric or task.metric or "logit-diff"
    return Prepared(task, tokens, name, task_metric(name, tokens, model))


def mean_with_interval(values: Tensor, bootstrap: Bootstrap | None) -> dict:
    """{"mean", "ci"} of per-prompt values [..., n_prompts]."""
    values = values.detach().double().cpu().numpy()
    out = {"mean": rounded(values.mean(-1))}
    if bootstrap is not None:
        out["ci"] = rounded(bootstrap.mean_interval(values))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Activation patching


def patch_task(
    model,
    prepared: Prepared,
    site: str,
    direction: str = "denoise",
    max_memory: int | None = None,
    workers: Workers | None = None,
    bootstrap: Bootstrap | None = None,
) -> dict:
    """Activation patching of every pair at once (`interp.patching.patch_grid`): the grid of the mean metric, its
    interval, and the per-prompt grids."""
    from interp.patching import RESIDUAL_SITES, patch_grid
    from interp.tokens import str_tokens

    tokens = prepared.tokens
    if site in RESIDUAL_SITES and not tokens.same_length:
        raise InterpError(
            f"{prepared.task.source}: per-position patching ({site}) needs prompts of one token length;"
            f" these run from {int(tokens.end.min()) + 1} to {int(tokens.end.max()) + 1} (use --site "
            "head_out, or a task of one template)"
        )
    grid, clean_value, corrupt_value = patch_grid(
        model, tokens.clean, tokens.corrupt, prepared.metric, site, direction, max_memory, workers
    )
    columns = (
        [f"{p}:{t}" for p, t in enumerate(str_tokens(tokens.clean[0, : int(tokens.end[0]) + 1], model.tokenizer))]
        if site in RESIDUAL_SITES
        else [f"H{head}" for head in range(model.cfg.n_heads)]
    )
    mean = mean_with_interval(grid, bootstrap)
    return {
        **prepared.describe(),
        "site": site,
        "direction": direction,
        "clean_metric": float(clean_value.mean()),
        "corrupt_metric": float(corrupt_value.mean()),
        "row_axis": "layer",
        "column_axis": "position" if site in RESIDUAL_SITES else "head",
        "row_labels": [f"L{layer}" for layer in range(model.cfg.n_layers)],
        "column_labels": columns[: grid.shape[1]],
        "grid": mean["mean"],
        **({"grid_ci": mean["ci"]} if "ci" in mean else {}),
        "per_prompt": {
            "grid": rounded(grid.cpu().numpy()),
            "clean_metric": rounded(clean_value.cpu().numpy()),
            "corrupt_metric": rounded(corrupt_value.cpu().numpy()),
            "order": "layer x column x prompt",
        },
    }


# ----------------------------------------------------------------------------------------------------------------
# Path patching


def path_patch_task(
    model,
    prepared: Prepared,
    receivers: list[str],
    senders: list[str] | None = None,
    intervention: str = "patching",
    max_memory: int | None = None,
    workers: Workers | None = None,
    bootstrap: Bootstrap | None = None,
) -> dict:
    """Path patching from each sender into the receivers (`interp.paths`): per sender, the metric, its change from
    the clean run and that change as a fraction of the whole corruption's (clean -> corrupt)."""
    from interp.discovery import circuit_values
    from interp.paths import path_patch_edges

    tokens = prepared.tokens
    graph = Graph.of(model)
    clean, corrupt = circuit_values(
        model,
        tokens.clean,
        tokens.corrupt,
        prepared.metric,
        [graph.real, torch.zeros_like(graph.real)],
        intervention,
        None,
        max_memory,
        workers,
    )
    found = path_patch_edges(
        model, tokens.clean, tokens.corrupt, prepared.metric, receivers, senders, intervention, max_memory, workers
    )
    effect = found.effects.to(clean.device)
    whole = float(corrupt.mean() - clean.mean())
    effects = mean_with_interval(effect, bootstrap)
    rows = []
    for i, sender in enumerate(found.senders):
        row = {
            "sender": sender,
            "metric": float((clean + effect[i]).mean()),
            "effect": effects["mean"][i],
            "fraction_of_corruption": effects["mean"][i] / whole if whole else None,
        }
        if "ci" in effects:
            row["effect_ci"] = effects["ci"][i]
        rows.append(row)
    return {
        **prepared.describe(),
        "receivers": found.receivers,
        "intervention": intervention,
        "clean_metric": float(clean.mean()),
        "corrupt_metric": float(corrupt.mean()),
        "senders": rows,
        "per_prompt": {
            "clean_metric": rounded(clean.cpu().numpy()),
            "corrupt_metric": rounded(corrupt.cpu().numpy()),
            "effect": rounded(effect.cpu().numpy()),
            "order": "sender x prompt",
        },
    }


# ----------------------------------------------------------------------------------------------------------------
# Circuit evaluation


def read_circuit(path: str | Path, model) -> tuple[Circuit, str]:
    """(circuit, what it was): an EAP-IG / MIB circuit file, or a node list (a JSON list of node names, or a text
    file of them, one per line or comma-separated), whose circuit is every edge among those nodes, the input and
    the logits."""
    graph = Graph.of(model)
    path = Path(path)
    if not path.is_file():
        raise InterpError(f"no circuit file at {path}")
    text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = [name.strip() for line in text.splitlines() for name in line.split(",") if name.strip()]
    if isinstance(data, dict):
        circuit = load_circuit(path)
        if (circuit.graph.n_layers, circuit.graph.n_heads) != (graph.n_layers, graph.n_heads):
            raise InterpError(
                f"{path} is a circuit of {circuit.graph.n_layers} layers x {circuit.graph.n_heads} heads;"
                f" the model has {graph.n_layers} x {graph.n_heads}"
            )
        return Circuit(graph, circuit.scores, circuit.in_graph), "edges (EAP-IG / MIB circuit file)"
    if not isinstance(data, list) or not data or not all(isinstance(name, str) for name in data):
        raise InterpError(f"{path}: a circuit is an EAP-IG / MIB circuit file or a list of node names")
    return nodes_circuit(graph, data, path), "nodes (every edge among them)"


def nodes_circuit(graph: Graph, names: list[str], path) -> Circuit:
    import re

    writers, readers = {0}, {graph.logits_reader}
    for name in names:
        if name in ("input", "logits"):
            continue
        numbers = graph.node_numbers(name) if re.fullmatch(r"m\d+|a\d+\.h\d+", name) else None
        if numbers is None:
            raise InterpError(
                f"{path}: unknown node {name!r}; use a<layer>.h<head> or m<layer> within "
                f"{graph.n_layers} layers of {graph.n_heads} heads"
            )
        if name.startswith("a"):
            writers.add(graph.head_writer(*numbers))
            readers.update(graph.head_reader(*numbers, part) for part in "qkv")
        else:
            writers.add(graph.mlp_writer(*numbers))
            readers.add(graph.mlp_reader(*numbers))
    in_graph = torch.zeros_like(graph.real)
    rows, cols = torch.tensor(sorted(writers)), torch.tensor(sorted(readers))
    in_graph[rows[:, None], cols[None, :]] = True
    in_graph &= graph.real
    return Circuit(graph, in_graph.float(), in_graph)


def evaluate_task(
    model,
    prepared: Prepared,
    circuit: Circuit,
    intervention: str = "patching",
    max_memory: int | None = None,
    workers: Workers | None = None,
    bootstrap: Bootstrap | None = None,
) -> dict:
    """Faithfulness of the circuit on the task, as MIB computes it: (circuit - empty) / (full - empty) of the
    metric averaged over prompts, every edge outside the circuit carrying its replacement; the circuit pruned to
    its paths from input to logits first (MIB's `prune`)."""
    from interp.discovery import circuit_values, normalised_faithfulness

    tokens = prepared.tokens
    graph, pruned = circuit.graph, circuit.pruned()
    runs = circuit_values(
        model,
        tokens.clean,
        tokens.corrupt,
        prepared.metric,
        [graph.real, torch.zeros_like(graph.real), pruned.in_graph],
        intervention,
        None,
        max_memory,
        workers,
    )
    full, empty, value = (run.detach().double().cpu().numpy() for run in runs)
    result = {
        **prepared.describe(),
        "intervention": intervention,
        "n_edges_given": int(circuit.in_graph.sum()),
        "n_edges": pruned.n_edges,
        "nodes": sorted(name for name, kept in pruned.nodes_in_graph().items() if kept),
        "full_metric": float(full.mean()),
        "empty_circuit_metric": float(empty.mean()),
        "circuit_metric": float(value.mean()),
        "faithfulness": normalised_faithfulness(float(value.mean()), float(full.mean()), float(empty.mean())),
        "per_prompt": {
            "full_metric": rounded(full),
            "empty_circuit_metric": rounded(empty),
            "circuit_metric": rounded(value),
        },
    }
    if bootstrap is not None:
        result["faithfulness_ci"] = rounded(
            bootstrap.statistic_interval(lambda c, f, e: (c - e) / np.where(f == e, np.nan, f - e), value, full, empty)
        )
    return result
