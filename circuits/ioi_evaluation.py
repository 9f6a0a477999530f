"""Evaluating an IOI circuit as the paper does, on (head, position) nodes, and how sure each criterion is.

Faithfulness, completeness and minimality (`interp.circuit`), each with its per-prompt values and bootstrap
interval; the found circuit against random circuits of the same size (Shi et al. 2024: is it more faithful than
chance?); template hold-out (classes found on half of the templates, evaluated on the other half); and the
comparisons with a known circuit (the paper's, a planted model's) and with the paper's headline numbers.
"""

from __future__ import annotations

import random

import numpy as np

from interp.circuit import Node, NodeRuns, completeness, minimality, with_uncertainty
from interp.circuits.ioi_selection import Evidence, found_set, half_classes, template_halves
from interp.data.ioi import PAPER_HEADS, IOIDataset
from interp.metric_reader import logit_diff_metric
from interp.stats import Bootstrap, closeness_test, contains, jaccard, rounded
from interp.workers import Workers

# Where each class does its work: the circuit's nodes are its heads at these positions only.
CLASS_POSITIONS = {
    "name_mover": "END",
    "negative_name_mover": "END",
    "backup_name_mover": "END",
    "s_inhibition": "END",
    "induction": "S2",
    "duplicate_token": "S2",
    "previous_token": "S1+1",
}
# The paper's code orders GPT-2 small's name movers (with the backups) by importance; its minimality sets K_v
# follow that order (see `k_sets`).
PAPER_NAME_MOVER_ORDER = [
    (9, 9),
    (10, 0),
    (9, 6),
    (10, 10),
    (10, 6),
    (10, 2),
    (10, 1),
    (11, 2),
    (9, 7),
    (9, 0),
    (11, 9),
]


def circuit_nodes(classes: dict[str, list]) -> dict[str, list[Node]]:
    return {
        name: [(layer, head, CLASS_POSITIONS[name]) for layer, head in members] for name, members in classes.items()
    }


def k_sets(by_class: dict[str, list[Node]], paper_sets: bool) -> dict[Node, list[Node]]:
    """Minimality's K_v for every node v: v's class; with `paper_sets` (GPT-2 small's shape), the paper's own sets
    where it gives them: a name mover's K_v is the importance-ordered name-mover list up to it, 9.0's and 11.9's
    all name movers and the negative ones, 5.8's and 5.9's {11.10, 10.7, v}."""
    nodes = [node for members in by_class.values() for node in members]
    of_heads = lambda heads: [n for n in nodes if n[:2] in heads]  # noqa: E731
    sets = {node: members for members in by_class.values() for node in members}
    if not paper_sets:
        return sets
    for node in nodes:
        head = node[:2]
        if head in ((9, 0), (11, 9)):
            sets[node] = of_heads(PAPER_NAME_MOVER_ORDER + PAPER_HEADS["negative_name_mover"])
        elif head in ((5, 8), (5, 9)):
            sets[node] = of_heads([(11, 10), (10, 7)]) + [node]
        elif head in PAPER_NAME_MOVER_ORDER:
            sets[node] = of_heads(PAPER_NAME_MOVER_ORDER[: PAPER_NAME_MOVER_ORDER.index(head) + 1])
    return sets


def node_runs(
    model, clean: IOIDataset, corrupt: IOIDataset, workers: Workers | None = None, bootstrap: Bootstrap | None = None
) -> NodeRuns:
    """Node-level runs of p_IOI measured by the logit difference per prompt, means over p_ABC within template:
    built once, shared by every circuit evaluated on the same prompts (runs of the same node sets are not
    repeated); with a `bootstrap`, every criterion gets its interval."""
    return NodeRuns.build(
        model,
        clean.tokens,
        clean.positions,
        corrupt.tokens,
        clean.template_ids,
        corrupt.template_ids,
        metric=logit_diff_metric(clean.io_ids, clean.s_ids, clean.positions["END"], per_prompt=True),
        workers=workers,
        bootstrap=bootstrap,
    )


def evaluation_nodes(classes: dict[str, list]) -> list[Node]:
    """The circuit's nodes, in the one order every evaluation of the same set uses."""
    return sorted(node for members in circuit_nodes(classes).values() for node in members)


def evaluate_circuit(
    runs: NodeRuns,
    classes: dict[str, list],
    n_random: int = 10,
    greedy_steps: int = 5,
    greedy_candidates: int = 5,
    seed: int = 0,
) -> dict:
    """The paper's evaluation of a circuit of (head, position) nodes, every other node mean-ablated over p_ABC
    within template (`node_runs`): faithfulness, completeness (class, random and greedy knock-outs) and
    minimality."""
    model = runs.model
    by_class = circuit_nodes(classes)
    circuit = evaluation_nodes(classes)
    name_movers = by_class["name_mover"] + by_class["backup_name_mover"]
    runs.prefetch([([], True), (circuit, False), (name_movers, True)])
    f_model, f_circuit = runs.full_model(), runs.circuit(circuit)
    paper_shape = (model.cfg.n_layers, model.cfg.n_heads) == (12, 12)
    return {
        "nodes": [list(node) for node in circuit],
        "model_logit_diff": f_model,
        "circuit_logit_diff": f_circuit,
        "faithfulness": f_circuit / f_model,
        "faithfulness_gap": abs(f_model - f_circuit),
        **faithfulness_uncertainty(runs, circuit),
        "completeness": completeness(runs, circuit, by_class, n_random, greedy_steps, greedy_candidates, seed),
        "minimality": minimality(runs, circuit, k_sets(by_class, paper_shape), f_circuit),
        "minimality_sets": "paper" if paper_shape else "class",
        "name_movers_and_backups_knocked_out_logit_diff": runs.model_without(name_movers),
    }


def paper_comparison(found: dict[str, list], reference: dict[str, list] = PAPER_HEADS) -> dict:
    """Per class, precision and recall of the found heads against a known circuit: the paper's (GPT-2 small), or
    the one a planted model was built with."""
    comparison = {}
    for name, heads in reference.items():
        known = [tuple(head) for head in heads]
        hits = len(set(map(tuple, found[name])) & set(known))
        comparison[name] = {
            "precision": hits / len(found[name]) if found[name] else None,
            "recall": hits / len(known) if known else None,
            "known": known,
            "found": found[name],
        }
    return comparison


def known_circuits(model) -> dict[str, dict]:
    """Circuits to evaluate beside the found one, never used to find it: the paper's 26 heads on GPT-2 small's
    shape, and the circuit a planted model was built with (`interp.planted`)."""
    known = {}
    if (model.cfg.n_layers, model.cfg.n_heads) == (12, 12):
        known["paper"] = PAPER_HEADS
    if model.interp_source.circuit is not None:
        known["planted"] = model.interp_source.circuit
    return known


def faithfulness_uncertainty(runs: NodeRuns, circuit: list[Node]) -> dict:
    """F(M) and F(C) per prompt, and with the runs' bootstrap the intervals of F(C) / F(M) and |F(M) - F(C)|."""
    result = with_uncertainty(
        runs, {}, {"model_logit_diff": ([], True), "circuit_logit_diff": (circuit, False)}, gap="faithfulness_gap"
    )
    if runs.bootstrap is not None:
        f_model, f_circuit = runs.values([], True).numpy(), runs.values(circuit, False).numpy()
        result["faithfulness_ci"] = rounded(runs.bootstrap.statistic_interval(np.divide, f_circuit, f_model))
    return result


def random_circuits(runs: NodeRuns, circuit: list[Node], n: int, seed: int) -> dict:
    """The circuit's faithfulness against `n` random circuits of the same size: as many nodes at each position
    as the circuit has there, on heads drawn at random. Closeness to the model, |1 - F(C) / F(M)|, is the
    statistic: the percentile is the share of random circuits farther from the model than the circuit, the
    p-value (1 + the number at least as close) / (n + 1)."""
    rng = random.Random(seed)
    heads = [(layer, head) for layer in range(runs.model.cfg.n_layers) for head in range(runs.model.cfg.n_heads)]
    by_position = {}
    for _, _, position in circuit:
        by_position[position] = by_position.get(position, 0) + 1
    drawn = [
        sorted(
            (layer, head, position)
            for position, count in by_position.items()
            for layer, head in rng.sample(heads, count)
        )
        for _ in range(n)
    ]
    runs.prefetch([(nodes, False) for nodes in drawn] + [(circuit, False), ([], True)])
    f_model = runs.full_model()
    faithfulness = np.array([runs.circuit(nodes) / f_model for nodes in drawn])
    found = runs.circuit(circuit) / f_model
    closeness, random_closeness = abs(1 - found), np.abs(1 - faithfulness)
    return {
        "n": n,
        "seed": seed,
        "size": len(circuit),
        "faithfulness": found,
        "random_faithfulness": rounded(faithfulness),
        "random_nodes": [[list(node) for node in nodes] for nodes in drawn],
        **closeness_test(closeness, random_closeness),
    }


def template_holdout(runs: NodeRuns, evidence: Evidence, template_ids, found: dict[str, list], seed: int) -> dict:
    """Classes found on half of the templates, evaluated on the other half, both ways: the faithfulness of each
    half's circuit on the held-out prompts, and the Jaccard overlaps of the halves' found sets with each other and
    with the set found on all prompts."""
    halves = template_halves(template_ids, seed)
    template_ids = np.asarray(template_ids)
    f_model = runs.values([], True).numpy()
    result = {"templates": [list(half) for half in halves], "directions": []}
    classes = [half_classes(evidence, template_ids, half) for half in halves]
    for found_on, evaluated_on in ((0, 1), (1, 0)):
        nodes = evaluation_nodes(classes[found_on])
        held_out = np.isin(template_ids, halves[evaluated_on])
        f_circuit = runs.values(nodes, False).numpy()
        result["directions"].append(
            {
                "found_on": list(halves[found_on]),
                "evaluated_on": list(halves[evaluated_on]),
                "heads": {name: [list(h) for h in heads] for name, heads in classes[found_on].items()},
                "held_out_faithfulness": float(f_circuit[held_out].mean() / f_model[held_out].mean()),
                "jaccard_with_all_prompts": jaccard(found_set(classes[found_on]), found_set(found)),
            }
        )
    result["jaccard_between_halves"] = jaccard(found_set(classes[0]), found_set(classes[1]))
    return result


def paper_numbers(values: dict[str, tuple[float, list | None]], paper: dict[str, float]) -> dict:
    """Per headline number: the paper's value beside ours and our interval, and whether the interval holds it."""
    return {
        name: {
            "paper": paper[name],
            "ours": ours,
            "ci": interval,
            "inside_interval": None if interval is None else contains(interval, paper[name]),
        }
        for name, (ours, interval) in values.items()
    }
