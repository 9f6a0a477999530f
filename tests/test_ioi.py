"""The IOI reproduction end to end: on the organism it must find a circuit that explains the behaviour; on
random:gpt2 (the GPT-2 small code path) it must run to completion."""
import json

import pytest

from interp.circuits.ioi import Protocol, run, selected
from interp.models import load_model


def test_selected_by_threshold():
    import torch

    effect = torch.tensor([[0.0, -0.2, 0.01], [-0.06, 0.3, -0.04]])
    assert selected(effect, -1) == [(0, 1), (1, 0)]  # strongest first
    assert selected(effect, +1) == [(1, 1)]
    assert selected(effect, -1, exclude=[(0, 1)]) == [(1, 0)]


@pytest.fixture(scope="module")
def organism_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ioi-organism")
    return run(load_model("organism", device="cpu"), out, n=60, seed=0, quiet=True), out


def test_organism_circuit(organism_run):
    results, out = organism_run
    assert results["mean_logit_diff"] > 0
    assert results["heads"]["name_mover"], "no name movers found"
    for name in ("s_inhibition", "induction", "duplicate_token", "previous_token", "backup_name_mover",
                 "negative_name_mover"):
        assert name in results["heads"]
    evaluation = results["evaluation"]
    assert evaluation["name_movers_and_backups_knocked_out_logit_diff"] <= 0.5 * evaluation["model_logit_diff"]
    assert 0.8 <= results["faithfulness"] <= 1.2


def test_organism_results_file(organism_run):
    results, out = organism_run
    data = json.loads((out / "results.json").read_text())
    for key in ("model", "n_prompts", "seed", "versions", "git_commit", "mean_logit_diff", "io_prob", "io_over_s",
                "heads", "faithfulness", "completeness", "minimality", "forward_passes"):
        assert key in data, key
    assert data["model"] == "organism" and data["n_prompts"] == 60 and "paper_comparison" not in data
    assert "paper_circuit" not in data  # the organism does not have GPT-2 small's shape
    assert data["protocol"] == {"names": "paper", "order": "mixed", "n_templates": None, "corruption": "paper",
                                "prepend_bos": False, "random_knockouts": 10, "greedy_steps": 5,
                                "greedy_candidates": 5}
    completeness = data["evaluation"]["completeness"]
    assert len(completeness["random"]) == 10 and 1 <= len(completeness["greedy"]) <= 5
    assert set(data["minimality"]) == {f"{l}.{h}@{p}" for l, h, p in data["evaluation"]["nodes"]}
    assert {p.name for p in out.glob("*.png")} >= {"ioi_direct_effect.png", "ioi_circuit.png",
                                                   "ioi_completeness.png"}


def test_random_gpt2_runs_to_completion(tmp_path):
    protocol = Protocol(random_knockouts=2, greedy_steps=1, greedy_candidates=2)  # the suite's time: the criteria's cost is in forwards
    results = run(load_model("random:gpt2", device="cpu"), tmp_path, n=8, seed=0, quiet=True, protocol=protocol)
    assert set(results["heads"]) == {"name_mover", "negative_name_mover", "backup_name_mover", "s_inhibition",
                                     "induction", "duplicate_token", "previous_token"}
    assert (tmp_path / "results.json").exists()
    paper = results["paper_circuit"]  # GPT-2 small's shape: the paper's 26 heads evaluated beside the found circuit
    assert len(paper["nodes"]) == 26 and set(paper["completeness"]["classes"]) == set(results["heads"])
    assert len(paper["minimality"]["9.0@END"]["k_v"]) == 13  # the paper's own K_v: name movers and negative ones
