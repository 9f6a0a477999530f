"""`interp check` as a user with real weights runs it, here on the HF-cache layout's random weights: it must run, say
that random weights cannot match, and measure what independent references measure (transformers' loss and logits, a
numpy bootstrap written out by hand)."""

import json

import numpy as np
import pytest
import torch
from conftest import use_hf_cache
from hub_layout import COMMITS
from test_real_path import check_ioi_dataset

from interp.circuits import check
from interp.cli import main
from interp.tokens import GPT2_BOS
from interp.vectors import mlp_outputs_replaced

N, RESAMPLES = 28, 200  # two prompts per template of the paper's 14


def run_check(capsys, *argv):
    """(exit status, stdout, stderr) of `interp check ...`; a failed check exits through SystemExit(1)."""
    try:
        code = main(["check", *map(str, argv)])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def hand_bootstrap_interval(values, groups, n_resamples, seed):
    """Percentile interval of the mean, prompts drawn with replacement within their template: per template (in
    order of first appearance) an [n_resamples, size] draw of member indices, as interp.stats documents it."""
    values, groups = np.asarray(values, dtype=np.float64), np.asarray(groups)
    rng = np.random.default_rng(seed)
    sums = np.zeros(n_resamples)
    for group in dict.fromkeys(groups.tolist()):
        members = np.flatnonzero(groups == group)
        drawn = members[rng.integers(0, len(members), size=(n_resamples, len(members)))]
        sums += values[drawn].sum(axis=1)
    return np.percentile(sums / len(values), [2.5, 97.5])


def test_check_gpt2_from_the_hf_cache(capsys, from_hub_cache, tmp_path):
    from transformers import GPT2LMHeadModel, GPT2TokenizerFast

    code, out, err = run_check(capsys, "--model", "gpt2", "--n", N, "--bootstrap", RESAMPLES, "--out", tmp_path)
    assert code == 1, err
    assert "gpt2: random weights: its loss on 'Hello world!' is" in out
    assert "gpt2-medium: random weights" in out and "Its values cannot match GPT-2's" in out
    assert "FAIL: 5 of 5 checks fail (exit status 1)" in out
    results = json.loads((tmp_path / "results.json").read_text())
    loss, *ioi, capitals = results["checks"]
    assert results["exit_status"] == 1 and [c["status"] for c in results["checks"]] == ["fail"] * 5

    # the loss, recomputed by transformers from the same checkpoint files and its own tokenizer
    snapshot = from_hub_cache / "models--openai-community--gpt2" / "snapshots" / COMMITS["gpt2"]
    hf = GPT2LMHeadModel.from_pretrained(snapshot).eval()
    tokens = torch.tensor([[GPT2_BOS, *GPT2TokenizerFast.from_pretrained(snapshot)("Hello world!")["input_ids"]]])
    assert loss["tokens"] == tokens[0].tolist()
    with torch.inference_mode():
        expected = hf(tokens, labels=tokens).loss.item()
    assert float(loss["ours_exact"]) == pytest.approx(expected, abs=1e-5)
    assert loss["expected_exact"] == "5.331855773925781"

    # IOI: the dataset interp ioi builds; per-prompt values as transformers computes them; intervals by hand
    data = results["ioi"]
    check_ioi_dataset(data, N)
    clean, end = torch.tensor(data["dataset"]["clean_tokens"]), torch.tensor(data["dataset"]["positions"]["END"])
    io, s = torch.tensor(data["dataset"]["io_ids"]), torch.tensor(data["dataset"]["s_ids"])
    with torch.inference_mode():
        final = hf(clean).logits[torch.arange(N), end]
    per_prompt = {key: np.array(values) for key, values in data["per_prompt"].items()}
    rows = torch.arange(N)
    np.testing.assert_allclose(per_prompt["logit_diff"], (final[rows, io] - final[rows, s]).numpy(), atol=1e-4)
    np.testing.assert_allclose(per_prompt["io_prob"], final.softmax(-1)[rows, io].numpy(), atol=1e-6)
    groups = data["dataset"]["template_ids"]
    assert data["bootstrap"]["strata"] == len(set(groups)) > 1
    for entry, key in zip(ioi, ("logit_diff", "io_over_s", "io_prob")):
        assert entry["ours"] == pytest.approx(per_prompt[key].mean(), abs=1e-5)
        by_hand = hand_bootstrap_interval(per_prompt[key], groups, RESAMPLES, data["bootstrap"]["seed"])
        np.testing.assert_allclose(entry["interval"], by_hand, atol=1e-5)
        assert entry["status"] == ("pass" if by_hand[0] <= entry["expected"] <= by_hand[1] else "fail")

    # capitals: run on gpt2-medium by default, the paper's prompt, every boundary's lens rank
    assert capitals["provenance"]["model"] == "gpt2-medium" and len(capitals["answer_ranks"]) == 25
    assert capitals["prompt"] == "Q: What is the capital of France?\nA: Paris\nQ: What is the capital of Poland?\nA:"


def test_capitals_check_passes_only_from_the_papers_block_on(tiny_hub_model, monkeypatch):
    """A vector that reads as " Warsaw" through the lens, written as block 1's (then block 0's) MLP output at the last
    position: with the expected block set to 1, the check passes for the first and fails for the second, where the
    answer leads one block too early."""
    monkeypatch.setitem(check.PAPER_GPT2_MEDIUM, "emergence_layer", 1)
    (answer,) = tiny_hub_model.tokenizer.encode(" Warsaw", add_special_tokens=False)
    warsaw = tiny_hub_model.W_U[:, answer].detach()
    assert check.capitals_check(tiny_hub_model)["status"] == "fail"  # random weights: never on top
    with mlp_outputs_replaced(tiny_hub_model, 100 * warsaw, [1], positions=[-1]):
        result = check.capitals_check(tiny_hub_model)
    assert (result["answer_lead_blocks"], result["ours"], result["status"]) == ([1], 1, "pass")
    with mlp_outputs_replaced(tiny_hub_model, 100 * warsaw, [0], positions=[-1]):
        result = check.capitals_check(tiny_hub_model)
    assert (result["answer_lead_blocks"], result["ours"], result["status"]) == ([0, 1], 0, "fail")


def test_missing_capitals_model_is_not_run(capsys, tiny_hub_dir, monkeypatch, tmp_path):
    use_hf_cache(monkeypatch, tmp_path / "empty-cache")
    code, out, err = run_check(
        capsys,
        "--model",
        tiny_hub_dir,
        "--capitals-model",
        "gpt2-medium",
        "--n",
        14,
        "--bootstrap",
        50,
        "--out",
        tmp_path / "out",
    )
    assert code == 1, err  # the checks that ran fail (random weights); the missing one is not among them
    assert "not run: capitals lens (gpt2-medium): weights for 'gpt2-medium' were not found" in out
    assert "FAIL: 4 of 4 checks fail" in out
    capitals = json.loads((tmp_path / "out" / "results.json").read_text())["checks"][-1]
    assert capitals["status"] == "not run" and "hf download openai-community/gpt2-medium" in capitals["reason"]


@pytest.mark.parametrize(
    "argv, problem",
    [
        (["--bootstrap", "0"], "--bootstrap must be at least 1 resample"),
        (["--n", "0"], "--n must be at least 1 prompt"),
        (["--capitals-model", "gtp2-medium"], "unknown model spec 'gtp2-medium'"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_options_are_one_line(capsys, argv, problem):
    code, out, err = run_check(capsys, *argv)
    assert code == 2 and out == "" and problem in err and err.count("\n") == 1
