"""The IOI reproduction end to end: on the organism it must find a circuit that explains the behaviour (GPT-2
small's shape runs in tests/test_real_path.py, by hub name)."""
import json

import pytest

from interp.circuits.ioi import run, selected
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
