"""Circuits of (head, position) nodes, run alone, and the IOI paper's criteria for them (Wang et al. 2023, §4).

A node is one head at one named position of every prompt, `(layer, head, "END")`: the IOI paper keeps its name
movers at END, induction heads at S2, previous-token heads at S1+1. A circuit C runs with every head's output
(its z) mean-ablated at every position except at C's nodes; knocking out a set K removes K's nodes only at their
own positions. Means are taken over a reference distribution within groups (p_ABC within each template, so that
positions line up). F(...) is the metric of such a run, F(M) that of the untouched model.
- faithfulness: F(C) against F(M);
- completeness: F(C \\ K) against F(M \\ K) for knock-out sets K (whole classes, random subsets of C, and sets
  grown greedily to make the two differ most); a complete circuit answers like the model;
- minimality: |F(C \\ (K_v \\ {v})) - F(C \\ K_v)| for each node v and a set K_v that contains it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.ablation import all_heads, check_head, mean_activations
from interp.engine import Transformer
from interp.errors import InterpError
from interp.metric_reader import Metric, Reader, make_reader
from interp.stats import Bootstrap, rounded
from interp.workers import Workers

Node = tuple[int, int, str]  # (layer, head, position name)


@dataclass
class NodeRuns:
    """What every node-level run shares: the prompts, their named positions, each prompt's group, the groups'
    mean z of every head over the reference prompts, and the metric resolved for the prompts. Runs go through the
    patching engine's forward (`interp.engine.Transformer`), which computes only the positions and logit
    columns the metric reads."""

    model: object
    tokens: Int[Tensor, "batch pos"]
    positions: dict[str, Int[Tensor, " batch"]]
    groups: Int[Tensor, " batch"]
    means: dict[str, Float[Tensor, "group pos head d_head"]]
    metric: Metric | Callable
    engine: Transformer
    reader: Reader
    workers: Workers | None = None  # where `prefetch` runs node sets (None: here)
    bootstrap: Bootstrap | None = None  # resamples of the prompts for the criteria's intervals (None: none)
    scores: dict = field(default_factory=dict)  # (kind, frozenset of nodes) -> F: criteria ask for the same sets
    # (F per prompt for a per-prompt metric: the criteria read its mean, the bootstrap its values)

    @classmethod
    def build(
        cls,
        model,
        tokens,
        positions,
        reference_tokens,
        groups,
        reference_groups,
        metric: Metric | Callable[[Tensor], float],
        workers: Workers | None = None,
        bootstrap: Bootstrap | None = None,
    ) -> NodeRuns:
        """`metric`: a `Metric`, or a function of the full logits [batch, pos, vocab]; a per-prompt metric keeps
        every run's values per prompt (and, with a `bootstrap`, the criteria get intervals)."""
        means = mean_activations(model, reference_tokens, all_heads(model), groups=reference_groups)
        runs = cls.on(model, tokens, positions, groups, means, metric, workers)
        runs.bootstrap = bootstrap
        return runs

    @classmethod
    def on(cls, model, tokens, positions, groups, means, metric, workers: Workers | None = None) -> NodeRuns:
        """The runs on `model`, given the means (a worker's replica gets them from the driver)."""
        device = model.cfg.device
        reader = make_reader(metric, *tokens.shape, device)
        tokens = tokens[:, : reader.n_pos_needed].to(device)  # later positions cannot change the metric
        means = {name: mean.to(device) for name, mean in means.items()}
        return cls(
            model,
            tokens,
            positions,
            torch.as_tensor(groups),
            means,
            metric,
            Transformer(model, reader.token_ids),
            reader,
            workers,
        )

    def check(self, nodes: Iterable[Node]) -> list[Node]:
        nodes = list(nodes)
        for layer, head, position in nodes:
            check_head(self.model, layer, head, "node")
            if position not in self.positions:
                raise InterpError(f"node position {position!r} is not one of {', '.join(self.positions)}")
        return nodes

    def masks(self, nodes: Iterable[Node], ablate_nodes: bool) -> dict[int, Bool[Tensor, "batch pos head"]]:
        """Per layer, where z is replaced: at the nodes (ablate_nodes), or everywhere but at them."""
        n_batch, n_pos = self.tokens.shape
        shape = (n_batch, n_pos, self.model.cfg.n_heads)
        masks = {layer: torch.full(shape, not ablate_nodes) for layer in range(self.model.cfg.n_layers)}
        rows = torch.arange(n_batch)
        for layer, head, position in self.check(nodes):
            masks[layer][rows, self.positions[position], head] = ablate_nodes
        return masks

    @torch.inference_mode()
    def run(self, masks: dict[int, Tensor]) -> Tensor:
        """The metric of one run (a scalar, or one value per prompt on the CPU for a per-prompt metric)."""

        def replace(point: str, layer: int, z: Tensor) -> Tensor:
            if point != "z" or not masks[layer].any():
                return z
            mean = self.means[f"blocks.{layer}.attn.hook_z"].to(z.device)[self.groups.to(z.device)]
            return torch.where(masks[layer].to(z.device)[..., None], mean[:, : z.shape[1]].to(z.dtype), z)

        return self.engine.run(self.tokens, self.reader, keep=(), edit=replace).value.cpu()

    def prefetch(self, sets: Iterable[tuple[Iterable[Node], bool]]) -> None:
        """Score the (nodes, ablate_nodes) sets not scored yet, shared out to the workers."""
        keys = [
            key
            for key in dict.fromkeys((ablate, frozenset(self.check(nodes))) for nodes, ablate in sets)
            if key not in self.scores
        ]
        if self.workers is None or self.workers.count == 1 or len(keys) < 2:
            for key in keys:
                self.scores[key] = self.run(self.masks(key[1], key[0]))
            return
        shared = {
            "tokens": self.tokens,
            "positions": self.positions,
            "groups": self.groups,
            "means": self.means,
            "metric": self.metric,
        }
        for part in self.workers.map(partial(score_node_sets, shared), keys, "circuit runs"):
            self.scores.update(part)

    def values(self, nodes: Iterable[Node], ablate_nodes: bool) -> Tensor:
        """The run's metric as the metric gives it: per prompt for a per-prompt metric."""
        key = (ablate_nodes, frozenset(self.check(nodes)))
        if key not in self.scores:
            self.scores[key] = self.run(self.masks(key[1], ablate_nodes))
        return self.scores[key]

    def score(self, nodes: Iterable[Node], ablate_nodes: bool) -> float:
        """The run's metric averaged over prompts (a scalar metric's own value)."""
        return self.values(nodes, ablate_nodes).mean().item()

    def circuit(self, nodes: Iterable[Node]) -> float:
        """F(C): everything but the nodes mean-ablated."""
        return self.score(nodes, ablate_nodes=False)

    def model_without(self, nodes: Iterable[Node]) -> float:
        """F(M \\ K): only the nodes mean-ablated."""
        return self.score(nodes, ablate_nodes=True)

    def full_model(self) -> float:
        """F(M): nothing ablated."""
        return self.model_without([])


def score_node_sets(shared: dict, model, keys: list[tuple[bool, frozenset]]) -> dict:
    """A worker's share of `NodeRuns.prefetch`, on its own replica of the model."""
    runs = NodeRuns.on(model, **shared)
    return {key: runs.run(runs.masks(key[1], key[0])) for key in keys}


def without(circuit: Sequence[Node], knocked: Iterable[Node]) -> list[Node]:
    knocked = set(knocked)
    return [node for node in circuit if node not in knocked]


def with_uncertainty(
    runs: NodeRuns, result: dict, sets: dict[str, tuple[Sequence[Node], bool]], gap: str | None = None
) -> dict:
    """`result` with, for each named run (nodes, ablate_nodes), its per-prompt values (`<name>_per_prompt`, for a
    per-prompt metric) and, with the runs' bootstrap, the interval of its mean (`<name>_ci`) and of `gap`, the
    absolute difference of the two runs' means."""
    values = {name: runs.values(nodes, ablate).numpy() for name, (nodes, ablate) in sets.items()}
    if any(v.ndim != 1 for v in values.values()):
        return result
    result.update({f"{name}_per_prompt": rounded(v) for name, v in values.items()})
    if runs.bootstrap is not None:
        result.update({f"{name}_ci": rounded(runs.bootstrap.mean_interval(v)) for name, v in values.items()})
        if gap is not None:
            result[f"{gap}_ci"] = rounded(
                runs.bootstrap.statistic_interval(lambda a, b: np.abs(a - b), *values.values())
            )
    return result


def knockout(runs: NodeRuns, circuit: Sequence[Node], knocked: Sequence[Node]) -> dict:
    """F(C \\ K), F(M \\ K) and their gap for one knock-out set K."""
    kept = without(circuit, knocked)
    f_c, f_m = runs.circuit(kept), runs.model_without(knocked)
    return with_uncertainty(
        runs,
        {"nodes": [list(node) for node in knocked], "circuit": f_c, "model": f_m, "incompleteness": abs(f_c - f_m)},
        {"circuit": (kept, False), "model": (knocked, True)},
        gap="incompleteness",
    )


def knockout_sets(circuit: Sequence[Node], knocked_sets: Iterable[Sequence[Node]]) -> list[tuple[list[Node], bool]]:
    """The runs `knockout` makes for each K, for `NodeRuns.prefetch`."""
    return [pair for knocked in knocked_sets for pair in ((without(circuit, knocked), False), (list(knocked), True))]


def random_subsets(circuit: Sequence[Node], n: int, seed: int) -> list[list[Node]]:
    """n non-empty subsets of the circuit, each node in with probability 1/2."""
    rng, subsets = random.Random(seed), []
    while len(subsets) < n and circuit:
        subset = [node for node in circuit if rng.random() < 0.5]
        if subset:
            subsets.append(subset)
    return subsets


def greedy_knockout(
    runs: NodeRuns, circuit: Sequence[Node], steps: int = 5, candidates: int = 5, seed: int = 0
) -> list[dict]:
    """K grown one node at a time: at each step `candidates` nodes not yet in K are drawn at random and the one
    that makes |F(C \\ K) - F(M \\ K)| largest joins K, as long as that widens the largest gap so far (then the
    search stops). Every accepted step's K and gap, in order. Drawing a few candidates per step, rather than
    trying every node, keeps the cost at 2 x steps x candidates runs."""
    rng, knocked, trail, best_gap = random.Random(seed), [], [], 0.0
    for _ in range(steps):
        remaining = [node for node in circuit if node not in knocked]
        if not remaining:
            break
        drawn = rng.sample(remaining, min(candidates, len(remaining)))
        runs.prefetch(knockout_sets(circuit, [knocked + [node] for node in drawn]))
        best = max(
            (knockout(runs, circuit, knocked + [node]) for node in drawn), key=lambda result: result["incompleteness"]
        )
        if best["incompleteness"] <= best_gap:
            break
        knocked, best_gap = [tuple(node) for node in best["nodes"]], best["incompleteness"]
        trail.append(best)
    return trail


def completeness(
    runs: NodeRuns,
    circuit: Sequence[Node],
    classes: dict[str, list[Node]],
    n_random: int = 10,
    greedy_steps: int = 5,
    greedy_candidates: int = 5,
    seed: int = 0,
) -> dict:
    """Knock-outs of whole classes, random subsets and a greedy search; their (F(C \\ K), F(M \\ K)) pairs."""
    subsets = random_subsets(circuit, n_random, seed)
    runs.prefetch(knockout_sets(circuit, [nodes for nodes in classes.values() if nodes] + subsets))
    results = {
        "classes": {name: knockout(runs, circuit, nodes) for name, nodes in classes.items() if nodes},
        "random": [knockout(runs, circuit, subset) for subset in subsets],
        "greedy": greedy_knockout(runs, circuit, greedy_steps, greedy_candidates, seed),
    }
    every = [*results["classes"].values(), *results["random"], *results["greedy"]]
    results["max_incompleteness"] = max((r["incompleteness"] for r in every), default=0.0)
    return results


def minimality(
    runs: NodeRuns, circuit: Sequence[Node], k_sets: dict[Node, Sequence[Node]], f_circuit: float
) -> dict[str, dict]:
    """Per node v: |F(C \\ (K_v \\ {v})) - F(C \\ K_v)|, in logit-difference units and relative to F(C)."""
    in_circuit = {node: [n for n in k_sets[node] if n in circuit] for node in circuit}
    runs.prefetch(
        [(without(circuit, [n for n in k_v if n != node]), False) for node, k_v in in_circuit.items()]
        + [(without(circuit, k_v), False) for k_v in in_circuit.values()]
    )
    scores = {}
    for node in circuit:
        k_v = in_circuit[node]
        with_v = runs.circuit(without(circuit, [n for n in k_v if n != node]))
        without_v = runs.circuit(without(circuit, k_v))
        score = abs(with_v - without_v)
        scores[node_name(node)] = with_uncertainty(
            runs,
            {
                "k_v": [node_name(n) for n in k_v],
                "absolute": score,
                "relative": score / abs(f_circuit) if f_circuit else None,
            },
            {
                "with_v": (without(circuit, [n for n in k_v if n != node]), False),
                "without_v": (without(circuit, k_v), False),
            },
            gap="absolute",
        )
    return scores


def node_name(node: Node) -> str:
    layer, head, position = node
    return f"{layer}.{head}@{position}"
