"""How sure an edge-level discovery is (`interp discover`), as `interp ioi` measures its node-level one.

Everything starts from values kept per prompt: each edge's score, and the metric of the full model, the empty
circuit and every circuit run. A bootstrap resample (`interp.stats.Bootstrap`, within template) reweights them, so
nothing is re-run for the intervals or the selection stability:
- intervals of the clean and empty metrics, of every faithfulness of the curve and of the circuit (the ratio
  (circuit - empty) / (full - empty) of the resampled means, resampled jointly), of CPR and CMD (recomputed from
  each resample's curve);
- selection stability: the discovery's rule (the top n edges by |mean score|, pruned to paths from input to
  logits), with the found circuit's n, applied to every resample's mean scores;
- template hold-out: the same rule on half of the templates' prompts, the circuit run and measured on the other
  half (two circuit runs);
- random circuits: the found circuit's faithfulness against random circuits of at least its size (one run each).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.circuits.ioi_selection import STABLE, template_halves
from interp.discovery import MIB_BUDGETS, Circuit, Graph, area
from interp.graph import pruned_masks, top_n_masks
from interp.metrics import normalised
from interp.stats import Bootstrap, closeness_test, jaccard, means_under, rounded

RESAMPLE_CHUNK = 100  # resamples selected at once: [chunk, n_writers, n_readers] masks and scores
ALSO_SELECTED = 50  # edges outside the circuit listed with their selection frequency, the most frequent first

# The circuit runs `interp discover` binds to its model, prompts and intervention: membership masks -> the metric
# per prompt, [n_circuits, n_prompts].
RunCircuits = Callable[[list[Tensor]], np.ndarray]


def metric_intervals(bootstrap: Bootstrap, full, empty, curve, circuit, budgets=MIB_BUDGETS) -> dict[str, list]:
    """Percentile intervals from the per-prompt metrics of the full model and the empty circuit ([n_prompts]),
    the curve's circuits ([n_budgets, n_prompts]) and the chosen circuit: clean and empty metric, each curve
    point's faithfulness, CPR and CMD of each resample's curve, and the circuit's faithfulness."""
    full_means, empty_means = bootstrap.means(full), bootstrap.means(empty)
    curve_faithfulness = normalised(bootstrap.means(curve), full_means, empty_means)  # [n_budgets, resample]
    return {
        "clean_metric_ci": rounded(bootstrap.interval(full_means)),
        "empty_circuit_metric_ci": rounded(bootstrap.interval(empty_means)),
        "curve_faithfulness_ci": rounded(bootstrap.interval(curve_faithfulness)),
        "cpr_ci": rounded(bootstrap.interval(area(budgets, list(curve_faithfulness)))),
        "cmd_ci": rounded(bootstrap.interval(area(budgets, list(np.abs(1 - curve_faithfulness))))),
        "circuit_faithfulness_ci": rounded(bootstrap.statistic_interval(normalised, circuit, full, empty)),
    }


def select_masks(
    graph: Graph, scores: Float[Tensor, "k n_writers n_readers"], n: int, selection: str
) -> Bool[Tensor, "k n_writers n_readers"]:
    """The discovery's rule on every score matrix: the top n edges by |score|, pruned, all at once; greedy growth
    from the logits one matrix at a time."""
    if selection == "topn":
        return pruned_masks(graph, top_n_masks(graph, scores, n))
    return torch.stack([Circuit.of_scores(graph, matrix).greedy(n).in_graph for matrix in scores])


def weighted_circuits(
    graph: Graph,
    per_prompt: Float[Tensor, "n_writers n_readers n_prompts"],
    weights: np.ndarray,
    n: int,
    selection: str,
) -> Iterator[Bool[Tensor, "k n_writers n_readers"]]:
    """The circuit the rule picks from the mean scores under each weighting of the prompts (rows of `weights`
    [n_weightings, n_prompts]), RESAMPLE_CHUNK weightings at a time."""
    real = graph.real.flatten().nonzero()[:, 0]
    values = per_prompt.flatten(0, 1)[real].double().numpy()  # [n_edges, n_prompts]
    for first in range(0, len(weights), RESAMPLE_CHUNK):
        means = torch.from_numpy(means_under(values, weights[first : first + RESAMPLE_CHUNK]).T)  # [k, n_edges]
        scores = torch.zeros(len(means), graph.real.numel(), dtype=torch.float64)
        scores[:, real] = means
        yield select_masks(graph, scores.view(-1, graph.n_writers, graph.n_readers), n, selection)


def edge_set(mask: Tensor) -> set[int]:
    """A membership matrix's edges, as flat indices."""
    return set(np.flatnonzero(mask.numpy()).tolist())


def selection_stability(
    graph: Graph, per_prompt: Tensor, bootstrap: Bootstrap, circuit: Circuit, n_selected: int, selection: str
) -> dict:
    """Each edge's fraction of resamples whose circuit (the same rule, the same n) holds it: those of the found
    circuit's edges, which of them are stable, the edges some resamples pick that all the prompts do not (the
    ALSO_SELECTED most frequent), and the Jaccard overlap of each resample's edge set with the found one."""
    found = edge_set(circuit.in_graph)
    selected = torch.zeros(graph.real.numel(), dtype=torch.int64)
    overlaps = []
    for masks in weighted_circuits(graph, per_prompt, bootstrap.counts / bootstrap.n_prompts, n_selected, selection):
        selected += masks.flatten(1).sum(0)
        overlaps += [jaccard(found, edge_set(mask)) for mask in masks]
    frequency = selected.double().numpy() / bootstrap.n_resamples  # flat [n_writers * n_readers]
    names = np.array([f"{w}->{r}" for w in graph.writer_names() for r in graph.reader_names()])
    of_found = {
        name: float(frequency[np.ravel_multi_index(graph.edge_index(name), graph.real.shape)])
        for name in circuit.edges()
    }
    others = sorted(
        (index for index in np.flatnonzero(frequency) if index not in found),
        key=lambda index: (-frequency[index], names[index]),
    )
    overlaps = np.array(overlaps)
    return {
        "stable_at": STABLE,
        "rule": f"{selection} {n_selected} edges by |resampled mean score|, pruned; n fixed at the found circuit's",
        "n_selected": n_selected,
        "found": of_found,
        "stable": [name for name, share in of_found.items() if share >= STABLE],
        "also_selected": {str(names[index]): float(frequency[index]) for index in others[:ALSO_SELECTED]},
        "n_also_selected": len(others),
        "jaccard": {"mean": float(overlaps.mean()), "ci": rounded(bootstrap.interval(overlaps))},
    }


def edge_names_of(graph: Graph, mask: Tensor) -> set[str]:
    return set(Circuit(graph, torch.zeros(mask.shape), mask).edges())


def subset_faithfulness(circuit: np.ndarray, full: np.ndarray, empty: np.ndarray, prompts: np.ndarray) -> float:
    """Faithfulness from the means over a subset of the prompts (boolean [n_prompts])."""
    return float(normalised(circuit[prompts].mean(), full[prompts].mean(), empty[prompts].mean()))


def template_holdout(
    graph: Graph,
    per_prompt: Tensor,
    template_ids,
    seed: int,
    circuit: Circuit,
    circuit_metric: np.ndarray,
    full: np.ndarray,
    empty: np.ndarray,
    n_selected: int,
    selection: str,
    run_circuits: RunCircuits,
) -> dict:
    """The rule (the same n) on the mean scores of half of the templates' prompts, each half's circuit measured on
    the other half's prompts, both ways (beside the all-prompts circuit on the same prompts); the Jaccard overlaps
    of the halves' edge sets with each other and with the all-prompts circuit."""
    halves = template_halves(template_ids, seed)
    template_ids = np.asarray(template_ids)
    members = np.stack([np.isin(template_ids, half) for half in halves]).astype(np.float64)
    [masks] = weighted_circuits(graph, per_prompt, members / members.sum(1, keepdims=True), n_selected, selection)
    metrics = run_circuits(list(masks))  # [2, n_prompts]
    edges = [edge_names_of(graph, mask) for mask in masks]
    found = set(circuit.edges())
    result = {"templates": [list(half) for half in halves], "directions": []}
    for found_on, evaluated_on in ((0, 1), (1, 0)):
        held_out = members[evaluated_on].astype(bool)
        result["directions"].append(
            {
                "found_on": list(halves[found_on]),
                "evaluated_on": list(halves[evaluated_on]),
                "n_edges": len(edges[found_on]),
                "held_out_faithfulness": subset_faithfulness(metrics[found_on], full, empty, held_out),
                "all_prompts_circuit_faithfulness": subset_faithfulness(circuit_metric, full, empty, held_out),
                "jaccard_with_all_prompts": jaccard(edges[found_on], found),
            }
        )
    result["jaccard_between_halves"] = jaccard(edges[0], edges[1])
    return result


def random_path_circuit(graph: Graph, size: int, rng: random.Random) -> Bool[Tensor, "n_writers n_readers"]:
    """A random circuit of at least `size` edges, each on a path from input to logits (so pruning keeps them all):
    the union of random paths, each stepping back from the logits to a writer drawn uniformly among those before
    its reader, then into one of that writer's own inputs drawn uniformly, until it reaches the input."""
    readers_of: dict[int, list[int]] = {}
    for reader, writer in enumerate(graph.reader_writer().tolist()):
        readers_of.setdefault(writer, []).append(reader)
    mask, n_edges = torch.zeros_like(graph.real), 0
    while n_edges < size:
        reader, writer = graph.logits_reader, None
        while writer != 0:
            writer = rng.randrange(graph.writers_before(reader))
            n_edges += not mask[writer, reader]
            mask[writer, reader] = True
            if writer:
                reader = rng.choice(readers_of[writer])
    return mask


def random_circuits(
    graph: Graph,
    faithfulness: float,
    size: int,
    n: int,
    seed: int,
    full: np.ndarray,
    empty: np.ndarray,
    run_circuits: RunCircuits,
) -> dict:
    """The found circuit's faithfulness against `n` random circuits of at least its size (`random_path_circuit`).
    Closeness to the model, |1 - faithfulness|, is the statistic: the percentile is the share of random circuits
    farther from the model than the found one, the p-value (1 + the number at least as close) / (n + 1)."""
    rng = random.Random(seed)
    drawn = [random_path_circuit(graph, size, rng) for _ in range(n)]
    metrics = run_circuits(drawn) if drawn else np.zeros((0, len(full)))
    values = normalised(metrics.mean(1), full.mean(), empty.mean())
    return {
        "n": n,
        "seed": seed,
        "size": size,
        "statistic": "|1 - faithfulness|",
        "faithfulness": faithfulness,
        "random_faithfulness": rounded(values),
        "random_n_edges": [int(mask.sum()) for mask in drawn],
        "how": "unions of random paths from input to logits, drawn until they hold at least the circuit's edges",
        **closeness_test(abs(1 - faithfulness), np.abs(1 - values)),
    }
