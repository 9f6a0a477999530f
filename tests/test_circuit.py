"""Node-level circuit runs and the IOI paper's criteria, against a hand computation with plain hooks: every head's
z replaced, prompt by prompt and position by position, by its template group's mean over p_ABC, except at the
kept (head, position) nodes."""

import pytest
import torch

from interp.circuit import NodeRuns, completeness, greedy_knockout, knockout, minimality, node_name, without
from interp.circuits.ioi import ld
from interp.circuits.ioi_evaluation import circuit_nodes, k_sets
from interp.data.ioi import PAPER_HEADS, ioi_datasets
from interp.metric_reader import logit_diff_metric

CIRCUIT = [(1, 2, "END"), (1, 0, "END"), (0, 3, "S2"), (0, 1, "S1+1")]


@pytest.fixture(scope="module")
def setting(tiny_model):
    clean, corrupt = ioi_datasets(12, seed=3, n_templates=4)  # 2 templates of each order: groups of a few prompts
    runs = NodeRuns.build(
        tiny_model,
        clean.tokens,
        clean.positions,
        corrupt.tokens,
        clean.template_ids,
        corrupt.template_ids,
        metric=lambda logits: ld(tiny_model, clean, logits).mean().item(),
    )
    return tiny_model, clean, corrupt, runs


def hand_score(model, clean, corrupt, ablated_at) -> float:
    """`ablated_at(layer, head, prompt, position)` says where z takes its group's mean; loops, no shortcuts."""
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    with torch.inference_mode():
        _, cache = model.run_with_cache(corrupt.tokens, names_filter=lambda name: name in names)
    groups = clean.template_ids.tolist()

    def group_mean(name, group):
        members = [i for i, g in enumerate(corrupt.template_ids.tolist()) if g == group]
        return sum(cache[name][i] for i in members) / len(members)

    def hook_for(layer):
        name = names[layer]

        def replace(z, hook):
            z = z.clone()
            for b in range(z.shape[0]):
                mean = group_mean(name, groups[b])
                for p in range(z.shape[1]):
                    for h in range(z.shape[2]):
                        if ablated_at(layer, h, b, p):
                            z[b, p, h] = mean[p, h]
            return z

        return name, replace

    with torch.inference_mode(), model.hooks(fwd_hooks=[hook_for(layer) for layer in range(model.cfg.n_layers)]):
        return ld(model, clean, model(clean.tokens)).mean().item()


def at_nodes(clean, nodes):
    return lambda layer, head, b, p: any(
        (layer, head) == (l, h) and p == int(clean.positions[key][b]) for l, h, key in nodes
    )


def test_circuit_and_knockouts_match_the_hand_computation(setting):
    model, clean, corrupt, runs = setting
    in_circuit = at_nodes(clean, CIRCUIT)
    expected = hand_score(model, clean, corrupt, lambda *where: not in_circuit(*where))
    assert runs.circuit(CIRCUIT) == pytest.approx(expected, abs=1e-4)
    knocked = CIRCUIT[1:3]
    result = knockout(runs, CIRCUIT, knocked)
    kept, removed = at_nodes(clean, without(CIRCUIT, knocked)), at_nodes(clean, knocked)
    assert result["circuit"] == pytest.approx(hand_score(model, clean, corrupt, lambda *w: not kept(*w)), abs=1e-4)
    assert result["model"] == pytest.approx(hand_score(model, clean, corrupt, removed), abs=1e-4)
    assert result["incompleteness"] == pytest.approx(abs(result["circuit"] - result["model"]))
    assert runs.full_model() == pytest.approx(ld(model, clean).mean().item(), abs=1e-5)
    kept = runs.masks(CIRCUIT, ablate_nodes=False)  # one kept (prompt, position) per prompt and node
    assert [int((~kept[layer]).sum()) for layer in (0, 1)] == [2 * len(clean), 2 * len(clean)]


def test_per_prompt_runs_average_to_the_mean_metric(setting):
    """A per-prompt metric keeps each run's values per prompt; their mean is the scalar metric's F, and each prompt's
    value is that prompt's own logit difference in the hand computation."""
    model, clean, corrupt, runs = setting
    per_prompt = NodeRuns.build(
        model,
        clean.tokens,
        clean.positions,
        corrupt.tokens,
        clean.template_ids,
        corrupt.template_ids,
        metric=logit_diff_metric(clean.io_ids, clean.s_ids, clean.positions["END"], per_prompt=True),
    )
    values = per_prompt.values(CIRCUIT, ablate_nodes=False)
    assert values.shape == (len(clean),)
    assert values.mean().item() == pytest.approx(runs.circuit(CIRCUIT), abs=1e-5)
    assert per_prompt.circuit(CIRCUIT) == pytest.approx(runs.circuit(CIRCUIT), abs=1e-5)
    knocked = CIRCUIT[:2]
    assert per_prompt.values(knocked, ablate_nodes=True).mean().item() == pytest.approx(
        runs.model_without(knocked), abs=1e-5
    )
    result = knockout(per_prompt, CIRCUIT, knocked)
    assert len(result["circuit_per_prompt"]) == len(clean) and "circuit_ci" not in result  # no bootstrap: no interval


def test_minimality_by_hand(setting):
    model, clean, corrupt, runs = setting
    f_circuit = runs.circuit(CIRCUIT)
    k_v = {node: [node, CIRCUIT[0]] if node != CIRCUIT[0] else [node] for node in CIRCUIT}
    scores = minimality(runs, CIRCUIT, k_v, f_circuit)
    node = CIRCUIT[2]
    kept_with_v = at_nodes(clean, without(CIRCUIT, [CIRCUIT[0]]))
    kept_without_v = at_nodes(clean, without(CIRCUIT, [CIRCUIT[0], node]))
    expected = abs(
        hand_score(model, clean, corrupt, lambda *w: not kept_with_v(*w))
        - hand_score(model, clean, corrupt, lambda *w: not kept_without_v(*w))
    )
    entry = scores[node_name(node)]
    assert entry["absolute"] == pytest.approx(expected, abs=1e-4)
    assert entry["relative"] == pytest.approx(expected / abs(f_circuit), abs=1e-4 / abs(f_circuit))
    assert entry["k_v"] == [node_name(node), node_name(CIRCUIT[0])]


def test_greedy_takes_the_largest_gap_first(setting):
    _, _, _, runs = setting
    trail = greedy_knockout(runs, CIRCUIT, steps=4, candidates=len(CIRCUIT))  # every node tried: exact greedy
    singles = {node: knockout(runs, CIRCUIT, [node])["incompleteness"] for node in CIRCUIT}
    assert [tuple(n) for n in trail[0]["nodes"]] == [max(singles, key=singles.get)]
    gaps = [step["incompleteness"] for step in trail]
    assert gaps == sorted(gaps) and len(set(gaps)) == len(gaps)  # each accepted step widens the gap
    assert [len(step["nodes"]) for step in trail] == list(range(1, len(trail) + 1))
    if len(trail) < 4:  # it stopped: no node left widens the gap
        knocked = [tuple(n) for n in trail[-1]["nodes"]]
        assert all(
            knockout(runs, CIRCUIT, knocked + [node])["incompleteness"] <= gaps[-1]
            for node in CIRCUIT
            if node not in knocked
        )
    drawn = greedy_knockout(runs, CIRCUIT, steps=1, candidates=1, seed=5)  # one random node tried
    assert len(drawn) <= 1
    result = completeness(
        runs, CIRCUIT, {"a": CIRCUIT[:2], "b": CIRCUIT[2:], "empty": []}, n_random=3, greedy_steps=1, seed=0
    )
    assert set(result["classes"]) == {"a", "b"} and len(result["random"]) == 3
    every = [*result["classes"].values(), *result["random"], *result["greedy"]]
    assert result["max_incompleteness"] == max(r["incompleteness"] for r in every)


def test_paper_minimality_sets():
    by_class = circuit_nodes(PAPER_HEADS)
    sets = k_sets(by_class, paper_sets=True)
    heads = lambda nodes: [n[:2] for n in nodes]  # noqa: E731
    assert heads(sets[(9, 9, "END")]) == [(9, 9)]
    assert sorted(heads(sets[(10, 10, "END")])) == sorted([(9, 9), (10, 0), (9, 6), (10, 10)])
    assert len(sets[(9, 0, "END")]) == 13 and (11, 10) in heads(sets[(11, 9, "END")])
    assert sorted(heads(sets[(5, 8, "S2")])) == [(5, 8), (10, 7), (11, 10)]
    assert heads(sets[(7, 3, "END")]) == PAPER_HEADS["s_inhibition"]  # no paper set: the class
    assert sets[(2, 2, "S1+1")] == [(2, 2, "S1+1"), (4, 11, "S1+1")]
    assert k_sets(by_class, paper_sets=False)[(9, 0, "END")] == by_class["backup_name_mover"]
    assert len([n for nodes in by_class.values() for n in nodes]) == 26
