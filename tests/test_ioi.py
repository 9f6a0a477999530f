"""The IOI reproduction end to end: on the organism it must find a circuit that explains the behaviour (GPT-2
small's shape runs in tests/test_real_path.py, by hub name)."""

import json

import numpy as np
import pytest

from interp.circuits.ioi import run
from interp.circuits.ioi_selection import THRESHOLD, class_masks
from interp.cli import main
from interp.models import load_model


def hand_bootstrap(values, groups, n_resamples, seed, statistic=np.mean):
    """The documented resampling, written out with index arrays: for each group in order of first appearance, as
    many draws with replacement as it has prompts; the 2.5th and 97.5th percentiles of the statistic."""
    values, groups = np.asarray(values, dtype=np.float64), np.asarray(groups)
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(groups == g) for g in dict.fromkeys(groups.tolist())]
    draws = np.concatenate([m[rng.integers(0, len(m), size=(n_resamples, len(m)))] for m in members], axis=1)
    return np.percentile([statistic(values[..., row]) for row in draws], [2.5, 97.5], axis=0)


def test_class_rule_by_hand():
    """Two weightings of a 2 x 3 model: thresholds, the attention condition, receivers and exclusions."""
    direct = np.array([[0.0, -0.2, 0.01], [-0.06, 0.3, -0.04]])
    effects = {
        "direct_effect": np.stack([direct, direct * 0.1], -1),
        "into_name_mover_queries": np.stack([np.array([[-0.1, -0.3, 0.0], [0.0, 0.0, -0.049]])] * 2, -1),
        "attention_end": np.stack([np.full((2, 3, 3), 0.3)] * 2, -1),
        "attention_s2": np.zeros((2, 3, 2, 2)),
    }
    effects["attention_end"][0, 0] = 0.1  # head 0.0 looks elsewhere
    masks = class_masks(effects)
    assert np.argwhere(masks["name_mover"][..., 0]).tolist() == [[0, 1], [1, 0]]
    assert np.argwhere(masks["negative_name_mover"][..., 0]).tolist() == [[1, 1]]
    # 0.1 passes into the queries but is a name mover; 0.0 passes and is not
    assert np.argwhere(masks["s_inhibition"][..., 0]).tolist() == [[0, 0]]
    # the second weighting finds no name movers, so no step that patches into them counts
    assert not masks["name_mover"][..., 1].any() and not masks["s_inhibition"][..., 1].any()
    assert THRESHOLD == 0.05


def test_mechanism_rule_by_hand():
    """One weighting of a 1 x 4 model where every head passes the direct-effect threshold as a name mover and
    attends to the names: the mechanism rule keeps the heads that look at IO more than at S and copy IO."""
    effects = {
        "direct_effect": np.full((1, 4, 1), -0.2),
        "attention_end": np.array([[[0.7, 0.1, 0.1], [0.2, 0.3, 0.4], [0.7, 0.1, 0.1], [0.5, 0.3, 0.2]]])[..., None],
        "attention_s2": np.zeros((1, 4, 2, 1)),
        "copying": np.array([[[0.9, 0.0], [0.9, 0.0], [0.1, 0.9], [0.6, 0.0]]])[..., None],
    }
    threshold = class_masks({key: value for key, value in effects.items() if key != "copying"})
    assert threshold["name_mover"][0, :, 0].tolist() == [True, True, True, True]
    # 0.1 looks at S more than at IO; 0.2 writes against IO; 0.3: IO 0.5 = S 0.3 + 0.2 is not more
    assert class_masks(effects)["name_mover"][0, :, 0].tolist() == [True, False, False, False]
    effects["direct_effect"] = -effects["direct_effect"]
    assert class_masks(effects)["negative_name_mover"][0, :, 0].tolist() == [False, False, True, False]


def test_copying_by_hand(organism):
    """The paper's copy score, written out: the head's OV output at IO (after block 0) through the final LayerNorm
    and the unembedding, IO among its 5 largest (or, negated, smallest) logits."""
    from interp.cache import run_with_selective_cache
    from interp.circuits.ioi import Protocol, copying

    clean, _ = Protocol(names="organism").datasets(organism, 12, 0)
    heads = [(1, 0), (2, 3), (3, 1)]
    scores = copying(organism, clean, heads)
    _, cache = run_with_selective_cache(organism, clean.tokens, ["blocks.1.hook_resid_pre"])
    for i, (layer, head) in enumerate(heads):
        for p in range(len(clean)):
            resid = cache["blocks.1.hook_resid_pre"][p, clean.positions["IO"][p]]
            out = organism.blocks[layer].ln1(resid) @ organism.W_V[layer, head] @ organism.W_O[layer, head]
            logits = organism.unembed(organism.ln_final(out[None]))[0]
            io = int(clean.io_ids[p])
            assert scores[i, 0, p] == float(io in logits.topk(5).indices.tolist())
            assert scores[i, 1, p] == float(io in (-logits).topk(5).indices.tolist())


@pytest.fixture(scope="module")
def organism():
    return load_model("organism", device="cpu")


def test_mechanism_rule_end_to_end(organism, tmp_path):
    """`--class-rule mechanism` from the command line: every head found passes its class's mechanism, recomputed
    from the per-prompt attention and copy scores that results.json keeps."""
    assert (
        main(
            [
                "ioi",
                "--model",
                "organism",
                "--n",
                "24",
                "--class-rule",
                "mechanism",
                "--random-circuits",
                "0",
                "--no-template-holdout",
                "--bootstrap",
                "50",
                "--random-knockouts",
                "1",
                "--greedy-steps",
                "1",
                "--quiet",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["protocol"]["class_rule"] == "mechanism"
    at_end = np.array(data["per_prompt"]["attention_end_to_IO_S1_S2"]).mean(-1)
    from_s2 = np.array(data["per_prompt"]["attention_S2_to_S1_S1+1"]).mean(-1)
    copies = np.array(data["per_prompt"]["copies_IO_top5_bottom5"]).mean(-1)
    heads = data["heads"]
    assert heads["name_mover"]  # the organism's 3.5 copies IO and looks at it
    for layer, head in heads["name_mover"] + heads["negative_name_mover"]:
        assert at_end[layer, head, 0] > at_end[layer, head, 1:].sum()
    assert all(copies[layer, head, 0] > 0.5 for layer, head in heads["name_mover"] + heads["backup_name_mover"])
    assert all(copies[layer, head, 1] > 0.5 for layer, head in heads["negative_name_mover"])
    assert all(at_end[layer, head, 2] > at_end[layer, head, 0] for layer, head in heads["s_inhibition"])
    assert all(from_s2[layer, head, 1] > 0.5 for layer, head in heads["induction"])
    assert all(from_s2[layer, head, 0] > 0.5 for layer, head in heads["duplicate_token"])
    assert main(["ioi", "--model", "organism", "--class-rule", "strict", "--quiet"]) == 2


@pytest.fixture(scope="module")
def organism_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ioi-organism")
    return run(load_model("organism", device="cpu"), out, n=60, seed=0, quiet=True), out


def test_organism_circuit(organism_run):
    results, out = organism_run
    assert results["mean_logit_diff"] > 0
    assert results["heads"]["name_mover"], "no name movers found"
    for name in (
        "s_inhibition",
        "induction",
        "duplicate_token",
        "previous_token",
        "backup_name_mover",
        "negative_name_mover",
    ):
        assert name in results["heads"]
    evaluation = results["evaluation"]
    assert evaluation["name_movers_and_backups_knocked_out_logit_diff"] <= 0.5 * evaluation["model_logit_diff"]
    assert 0.8 <= results["faithfulness"] <= 1.2


def test_organism_results_file(organism_run):
    results, out = organism_run
    data = json.loads((out / "results.json").read_text())
    for key in (
        "model",
        "n_prompts",
        "seed",
        "versions",
        "git_commit",
        "mean_logit_diff",
        "io_prob",
        "io_over_s",
        "heads",
        "faithfulness",
        "completeness",
        "minimality",
        "forward_passes",
    ):
        assert key in data, key
    assert data["model"] == "organism" and data["n_prompts"] == 60 and "paper_comparison" not in data
    assert "paper_circuit" not in data  # the organism does not have GPT-2 small's shape
    assert data["protocol"] == {
        "names": "paper",
        "order": "mixed",
        "n_templates": None,
        "corruption": "paper",
        "prepend_bos": False,
        "random_knockouts": 10,
        "greedy_steps": 5,
        "greedy_candidates": 5,
        "bootstrap": 1000,
        "random_circuits": 100,
        "template_holdout": True,
        "class_rule": "threshold",
    }
    completeness = data["evaluation"]["completeness"]
    assert len(completeness["random"]) == 10 and 1 <= len(completeness["greedy"]) <= 5
    assert set(data["minimality"]) == {f"{l}.{h}@{p}" for l, h, p in data["evaluation"]["nodes"]}
    assert {p.name for p in out.glob("*.png")} >= {"ioi_direct_effect.png", "ioi_circuit.png", "ioi_completeness.png"}


def test_intervals_are_the_percentile_bootstrap_of_the_files_per_prompt_values(organism_run):
    """Every interval recomputed by hand from results.json alone: the per-prompt values, the template ids and the
    documented seed."""
    _, out = organism_run
    data = json.loads((out / "results.json").read_text())
    groups, n_resamples, seed = data["dataset"]["template_ids"], data["bootstrap"]["n_resamples"], data["seed"]
    per_prompt = data["per_prompt"]
    for key, name in (("mean_logit_diff", "logit_diff"), ("io_prob", "io_prob"), ("io_over_s", "io_over_s")):
        assert np.mean(per_prompt[name]) == pytest.approx(data[key], abs=1e-5)
        assert data[f"{key}_ci"] == pytest.approx(hand_bootstrap(per_prompt[name], groups, n_resamples, seed), abs=1e-5)
    # the direct-effect grid: today's mean grid from the per-prompt values, and its intervals
    clean = np.array(per_prompt["clean_logit_diff"])
    patched = np.array(per_prompt["patched_logit_diff"]["direct_effect"])
    relative = lambda p, c: (p.mean(-1) - c.mean()) / abs(c.mean())  # noqa: E731
    assert np.allclose(relative(patched, clean), data["grids"]["direct_effect"], atol=1e-5)
    both = np.concatenate([patched.reshape(-1, len(clean)), clean[None]])
    expected = hand_bootstrap(both, groups, n_resamples, seed, statistic=lambda v: relative(v[:-1], v[-1]))
    intervals = np.array(data["selection"]["grid_intervals"]["direct_effect"])
    # results.json keeps 6 significant digits: per-prompt logit differences of up to ~20 are off by up to 5e-5
    # there, and an effect relative to a clean mean of ~3 by twice that over the mean
    stored = 2 * 5e-6 * np.abs(both).max() / abs(clean.mean())
    assert np.allclose(intervals.reshape(-1, 2), expected.T, rtol=0, atol=stored)
    # faithfulness: a ratio of two per-prompt series' means, resampled together
    evaluation = data["evaluation"]
    fm, fc = np.array(evaluation["model_logit_diff_per_prompt"]), np.array(evaluation["circuit_logit_diff_per_prompt"])
    assert fc.mean() / fm.mean() == pytest.approx(evaluation["faithfulness"], abs=1e-4)
    expected = hand_bootstrap(
        np.stack([fc, fm]), groups, n_resamples, seed, statistic=lambda v: v[0].mean() / v[1].mean()
    )
    assert evaluation["faithfulness_ci"] == pytest.approx(expected, abs=1e-5)


def test_selection_frequencies_and_significance_from_the_file(organism_run):
    results, out = organism_run
    selection = results["selection"]
    for name, heads in results["heads"].items():
        assert set(selection["found"][name]) == {f"{l}.{h}" for l, h in heads}
        for head, frequency in selection["found"][name].items():
            layer, index = map(int, head.split("."))
            assert selection["frequency"][name][layer][index] == pytest.approx(frequency, abs=1e-4)
            assert (head in selection["stable"][name]) == (frequency >= 0.95)
    assert 0 <= selection["jaccard"]["ci"][0] <= selection["jaccard"]["mean"] <= 1
    test = results["random_circuits"]
    closeness = abs(1 - test["faithfulness"])
    random_closeness = np.abs(1 - np.array(test["random_faithfulness"]))
    assert test["p_value"] == pytest.approx((1 + (random_closeness <= closeness + 1e-6).sum()) / (test["n"] + 1))
    assert all(len(nodes) == test["size"] for nodes in test["random_nodes"])
    holdout = results["template_holdout"]
    assert sorted(holdout["templates"][0] + holdout["templates"][1]) == sorted(set(results["dataset"]["template_ids"]))
    assert [d["found_on"] for d in holdout["directions"]] == holdout["templates"]


@pytest.mark.parametrize("value", ["-1", "x"])
def test_bad_bootstrap_is_one_line(value, capsys):
    assert main(["ioi", "--model", "organism", "--bootstrap", value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--bootstrap" in err
