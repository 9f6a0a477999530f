"""How sure `interp discover` is: per-prompt edge scores against the mean metric's, batched selection against one
circuit at a time, and the intervals and selection frequencies of results.json against a bootstrap written out by
hand from the file alone (index arrays, numpy's generator)."""

import json

import numpy as np
import pytest
import torch

from interp.discovery import Circuit, Graph, edge_scores
from interp.graph import pruned_masks, top_n_masks
from interp.patching import logit_diff_metric


@pytest.fixture(scope="module")
def organism():
    from interp.models import load_model

    return load_model("organism", device="cpu")


@pytest.fixture(scope="module")
def pairs(organism):
    from interp.data.ioi import ioi_datasets
    from interp.data.ioi_words import ORGANISM_NAMES

    clean, corrupt = ioi_datasets(4, seed=1, names=ORGANISM_NAMES, tokenizer=organism.tokenizer)
    return clean.tokens, corrupt.tokens, (clean.io_ids, clean.s_ids, clean.positions["END"])


@pytest.mark.parametrize("method", ["eap", "eap-ig", "exact"])
def test_per_prompt_scores_average_to_the_scores_of_the_mean_metric(organism, pairs, method):
    clean, corrupt, answers = pairs
    real = Graph.of(organism).real
    mean = edge_scores(organism, clean, corrupt, logit_diff_metric(*answers), method=method)
    per_prompt = logit_diff_metric(*answers, per_prompt=True)
    scored = edge_scores(organism, clean, corrupt, per_prompt, method=method)
    assert mean.per_prompt is None and scored.per_prompt.shape == (*real.shape, 4)
    torch.testing.assert_close(scored.per_prompt.mean(-1)[real], mean.scores[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scored.scores[real], mean.scores[real], atol=1e-5, rtol=1e-5)
    if method != "exact":  # a worker's share of the prompts: its own columns, 0 elsewhere; the shares add up
        shares = [edge_scores(organism, clean, corrupt, per_prompt, method=method, prompts=p) for p in ([0, 2], [1, 3])]
        assert bool((shares[0].per_prompt[:, :, [1, 3]] == 0).all())
        torch.testing.assert_close(shares[0].per_prompt + shares[1].per_prompt, scored.per_prompt, atol=1e-5, rtol=1e-5)


def test_batched_top_n_and_pruning_equal_one_circuit_at_a_time():
    graph = Graph(3, 2, 8)
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(-3, 4, (6, graph.n_writers, graph.n_readers), generator=generator).float()  # many ties
    for n in (0, 5, 20, graph.n_edges):
        masks = pruned_masks(graph, top_n_masks(graph, scores, n))
        for matrix, mask in zip(scores, masks):
            flat = matrix.abs().flatten().masked_fill(~graph.real.flatten(), -1.0)
            kept = torch.zeros(flat.shape, dtype=torch.bool)
            kept[torch.sort(flat, descending=True, stable=True).indices[:n]] = True  # ties in index order
            kept &= flat > 0  # an edge scored 0 never joins
            assert torch.equal(mask, Circuit(graph, matrix, kept.view_as(matrix)).pruned().in_graph)
            assert torch.equal(mask, Circuit.of_scores(graph, matrix).top_n(n).in_graph)


def hand_resamples(groups, n_resamples: int, seed: int) -> np.ndarray:
    """[n_resamples, n_prompts] prompt indices: within each group, in order of first appearance, as many draws
    with replacement as it has prompts, from numpy's default_rng(seed)."""
    rng = np.random.default_rng(seed)
    groups = np.asarray(groups)
    drawn = []
    for group in dict.fromkeys(groups.tolist()):
        members = np.flatnonzero(groups == group)
        drawn.append(members[rng.integers(0, len(members), size=(n_resamples, len(members)))])
    return np.concatenate(drawn, axis=1)


def percentile_interval(samples) -> np.ndarray:
    return np.moveaxis(np.percentile(samples, [2.5, 97.5], axis=-1), 0, -1)


def trapezoids(budgets, values) -> np.ndarray:
    return sum((x2 - x1) * (y1 + y2) / 2 for x1, x2, y1, y2 in zip(budgets, budgets[1:], values, values[1:]))


@pytest.fixture(scope="module")
def organism_run(tmp_path_factory):
    from interp.cli import main

    out = tmp_path_factory.mktemp("discover")
    assert (
        main(
            [
                "discover",
                "--model",
                "organism",
                "--method",
                "eap",
                "--n",
                "12",
                "--names",
                "organism",
                "--bootstrap",
                "50",
                "--random-circuits",
                "5",
                "--seed",
                "3",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    return out, json.loads((out / "results.json").read_text())


def test_intervals_equal_a_hand_bootstrap_from_the_results_file(organism_run):
    _, results = organism_run
    described, values = results["bootstrap"], results["per_prompt"]
    assert described["n_resamples"] == 50 and described["seed"] == 3 and described["method"] == "percentile"
    index = hand_resamples(results["dataset"]["template_ids"], described["n_resamples"], described["seed"])
    full, empty, circuit = (
        np.array(values[key])[index].mean(-1) for key in ("clean_metric", "empty_circuit_metric", "circuit_metric")
    )
    curve = np.array(values["curve_metric"])[:, index].mean(-1)  # [budget, resample]
    faithfulness = (curve - empty) / (full - empty)
    budgets = results["curve"]["budgets"]
    expected = {
        "clean_metric_ci": full,
        "empty_circuit_metric_ci": empty,
        "cpr_ci": trapezoids(budgets, list(faithfulness)),
        "cmd_ci": trapezoids(budgets, list(np.abs(1 - faithfulness))),
    }
    for key, samples in expected.items():
        assert results[key] == pytest.approx(percentile_interval(samples), abs=1e-4), key
    assert results["curve"]["faithfulness_ci"] == pytest.approx(percentile_interval(faithfulness), abs=1e-4)
    assert results["circuit"]["faithfulness_ci"] == pytest.approx(
        percentile_interval((circuit - empty) / (full - empty)), abs=1e-4
    )
    assert np.array(values["circuit_metric"]).mean() == pytest.approx(
        results["circuit"]["faithfulness"] * (results["clean_metric"] - results["empty_circuit_metric"])
        + results["empty_circuit_metric"],
        abs=1e-4,
    )


def test_selection_frequencies_equal_the_rule_run_resample_by_resample(organism_run):
    out, results = organism_run
    graph = Graph(4, 8, 1)
    scores = np.load(out / results["per_prompt"]["edge_scores"]["file"])  # [edge, prompt]
    assert scores.shape == (graph.n_edges, 12)
    np.testing.assert_allclose(scores.mean(1), results["scores"], atol=1e-5, rtol=1e-5)
    index = hand_resamples(results["dataset"]["template_ids"], 50, 3)
    selection, edges = results["selection"], graph.edge_names()
    counts = dict.fromkeys(edges, 0)
    for resample in index:
        resampled = Circuit.of_scores(graph, graph_matrix(graph, scores[:, resample].mean(1)))
        for edge in resampled.top_n(selection["n_selected"]).edges():
            counts[edge] += 1
    assert selection["found"] == {edge: pytest.approx(counts[edge] / 50) for edge in results["circuit"]["edges"]}
    assert selection["stable"] == [edge for edge, share in selection["found"].items() if share >= 0.95]
    others = {edge: count / 50 for edge, count in counts.items() if count and edge not in selection["found"]}
    assert selection["n_also_selected"] == len(others)
    assert selection["also_selected"] == {edge: pytest.approx(others[edge]) for edge in selection["also_selected"]}


def graph_matrix(graph: Graph, values) -> torch.Tensor:
    """Per-edge values in `edge_names` order -> [n_writers, n_readers]."""
    matrix = torch.zeros(graph.n_writers, graph.n_readers)
    writers, readers = zip(*graph.edge_list())
    matrix[list(writers), list(readers)] = torch.tensor(values, dtype=torch.float32)
    return matrix


def test_holdout_random_circuits_and_costs_are_recorded(organism_run):
    out, results = organism_run
    holdout = results["template_holdout"]
    assert sorted(holdout["templates"][0] + holdout["templates"][1]) == sorted(set(results["dataset"]["template_ids"]))
    assert [d["found_on"] for d in holdout["directions"]] == holdout["templates"]
    assert all(0 <= d["jaccard_with_all_prompts"] <= 1 for d in holdout["directions"])
    test = results["random_circuits"]
    assert test["n"] == len(test["random_faithfulness"]) == 5
    assert min(test["random_n_edges"]) >= test["size"] == results["circuit"]["n_edges"]
    closer = sum(abs(1 - f) <= abs(1 - test["faithfulness"]) for f in test["random_faithfulness"])
    assert test["p_value"] == pytest.approx((1 + closer) / 6, abs=1e-6)
    steps = json.loads((out / "timing.json").read_text())["steps"]
    assert {"selection_stability", "template_holdout", "random_circuits"} <= set(steps)


def test_bootstrap_0_leaves_no_intervals(tmp_path, capsys):
    from interp.cli import main

    assert (
        main(
            [
                "discover",
                "--model",
                "organism",
                "--method",
                "eap",
                "--n",
                "4",
                "--bootstrap",
                "0",
                "--random-circuits",
                "0",
                "--no-template-holdout",
                "--out",
                str(tmp_path),
                "--quiet",
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert not [key for key in keys(results) if key.endswith("_ci")] and results["bootstrap"] is None
    assert not {"selection", "template_holdout", "random_circuits"} & set(results)
    assert "stable" not in capsys.readouterr().out


def keys(tree) -> list[str]:
    """Every key of a JSON tree."""
    if isinstance(tree, dict):
        return [*tree, *(key for value in tree.values() for key in keys(value))]
    return [key for value in tree for key in keys(value)] if isinstance(tree, list) else []
