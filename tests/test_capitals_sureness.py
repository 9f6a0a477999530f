"""The capital-city experiment's per-prompt values and bootstrap intervals (`circuits/capitals_sureness.py`): the
per-prompt values against the means they average to, the intervals against a bootstrap written out by hand from
results.json alone, and the paper's values against our intervals."""

import json
from collections import Counter

import numpy as np
import pytest
from test_capitals import FIGURES

from interp.circuits import capitals
from interp.cli import main as interp_main
from interp.models import load_model


def mean(values):
    return float(np.mean(values))


def reciprocal_of_mean(values):
    return 1 / float(np.mean(values))


def mode(values):
    """`emergence_layer`'s rule: the most frequent block, the earliest on ties."""
    counts = Counter(values)
    return min(counts, key=lambda block: (-counts[block], block))


def reported_means(results):
    """(task, dict, reported key, the per-prompt series behind it, the statistic of its measured values) for every
    mean over prompts that the results report; written out here from the documentation, not from the code."""
    for task, entry in results["tasks"].items():
        yield task, entry, "accuracy", entry["per_prompt"]["answered"], mean
        yield task, entry, "emergence_layer", entry["per_prompt"]["answer_peak_block"], mode
        switch = entry["switch_test"]
        for key, series in (("rate", "argument_on_top"), ("answer_lost_rate", "answer_lost")):
            yield task, switch, key, switch["per_prompt"][series], mean
        transplant = results["transplant"][task]
        for key, series, statistic in (
            ("mrr_before", "reciprocal_rank_before", mean),
            ("mrr_after", "reciprocal_rank_after", mean),
            ("rank_before", "reciprocal_rank_before", reciprocal_of_mean),
            ("rank_after", "reciprocal_rank_after", reciprocal_of_mean),
            ("no_effect_rate", "no_effect", mean),
        ):
            yield task, transplant, key, transplant["per_prompt"][series], statistic
    for method in ("zero", "mean"):
        for curve in results["ablation"][method].values():
            for kind in ("abstractive", "extractive"):
                yield "capitals", curve, f"{kind}_accuracy", curve["per_prompt"][kind], mean


def hand_resamples(results):
    """Per task, [n_resamples, n_prompts] indices of the prompts each resample draws, as results["bootstrap"]
    documents them: numpy's default_rng(seed), then each task in turn (results["tasks"]' order), as many draws
    with replacement from its own prompts as it has."""
    rng = np.random.default_rng(results["bootstrap"]["seed"])
    n = results["bootstrap"]["n_resamples"]
    return {
        task: rng.integers(0, entry["n_prompts"], size=(n, entry["n_prompts"]))
        for task, entry in results["tasks"].items()
    }


@pytest.fixture(scope="module", params=["tiny", "organism"])
def bootstrapped(request, tmp_path_factory):
    """A random GPT-2 (it answers nothing, so every prompt is measured and the emergence block varies) and the
    organism (it answers most of its capitals: the measured prompts are a subset), 12 prompts a task."""
    model = request.getfixturevalue("tiny_model") if request.param == "tiny" else load_model("organism", device="cpu")
    out = tmp_path_factory.mktemp(f"bootstrap-{request.param}")
    capitals.run(
        model,
        out,
        quiet=True,
        seed=3,
        n_prompts=12,
        n_texts=5,
        ablation_ks=[0, 1, 2],
        bootstrap=300,
        capitals_table="capitals",
    )
    return json.loads((out / "results.json").read_text())


def test_per_prompt_values_average_to_the_reported_means(bootstrapped):
    for task, where, key, series, statistic in reported_means(bootstrapped):
        n_prompts = bootstrapped["tasks"][task]["n_prompts"]
        assert len(series) == n_prompts, key
        measured = [value for value in series if value is not None]
        if where[key] is None:  # a switch test where the answer never leads at the block
            assert not measured
            continue
        assert statistic(measured) == pytest.approx(where[key], rel=1e-5), (task, key)
    for task, entry in bootstrapped["tasks"].items():
        answered = [ranks[-1] == 1 for ranks in entry["per_prompt"]["answer_ranks"]]
        assert entry["per_prompt"]["answered"] == [int(a) for a in answered]
        measured = [i for i, block in enumerate(entry["per_prompt"]["answer_peak_block"]) if block is not None]
        assert len(measured) == entry["n_measured"]
        switch = entry["switch_test"]
        assert switch["n"] == sum(value is not None for value in switch["per_prompt"]["answer_lost"])
        assert bootstrapped["transplant"][task]["n"] == len(measured) - 1  # every measured prompt but the source
        assert bootstrapped["transplant"][task]["per_prompt"]["no_effect"][measured[0]] is None


def test_intervals_equal_a_hand_computed_bootstrap(bootstrapped):
    """Each resample's statistic recomputed on the measured prompts it draws (a resample that draws none of them
    is left out), then numpy's 2.5th and 97.5th percentiles."""
    draws = hand_resamples(bootstrapped)
    for task, where, key, series, statistic in reported_means(bootstrapped):
        values = np.array(series, dtype=float)  # None: NaN
        samples = [
            statistic(values[row][~np.isnan(values[row])]) for row in draws[task] if (~np.isnan(values[row])).any()
        ]
        if not samples:  # a switch test where the answer never leads at the block
            assert where[f"{key}_ci"] is None
            continue
        assert where[f"{key}_ci"] == pytest.approx(np.percentile(samples, [2.5, 97.5]), rel=1e-5, abs=1e-6), key
        if key == "emergence_layer":
            shares = {str(int(block)): count / len(samples) for block, count in Counter(samples).items()}
            assert where["emergence_layer_bootstrap"] == pytest.approx(shares, rel=1e-5)
            assert bootstrapped["transplant"][task]["layer_ci"] == where["emergence_layer_ci"]
    assert bootstrapped["emergence_layer_ci"] == bootstrapped["tasks"]["capitals"]["emergence_layer_ci"]
    widths = [
        ci[1] - ci[0] for _, where, key, _, _ in reported_means(bootstrapped) if (ci := where[f"{key}_ci"]) is not None
    ]
    assert max(widths) > 0  # something uncertain was resampled
    if bootstrapped["model"] != "organism":  # the random model's emergence block varies from prompt to prompt
        assert any(len(entry["emergence_layer_bootstrap"]) > 1 for entry in bootstrapped["tasks"].values())


def test_no_intervals_with_bootstrap_zero(tiny_checkpoint, tmp_path):
    assert (
        interp_main(
            [
                "capitals",
                "--model",
                str(tiny_checkpoint),
                "--out",
                str(tmp_path),
                "--n-prompts",
                "3",
                "--ablation-ks",
                "0",
                "--n-texts",
                "2",
                "--bootstrap",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "results.json").read_text())

    def keys(value):
        if isinstance(value, dict):
            return set(value) | {k for v in value.values() for k in keys(v)}
        return {k for v in value for k in keys(v)} if isinstance(value, list) else set()

    found = keys(results)
    assert results["bootstrap"] is None and "per_prompt" in found  # the per-prompt values stay
    assert not {key for key in found if key.endswith("_ci") or key.endswith("_bootstrap")}
    assert {p.name for p in tmp_path.iterdir()} == {"results.json", "timing.json"} | FIGURES


def test_negative_bootstrap_is_a_one_line_error(tiny_checkpoint, tmp_path, capsys):
    code = interp_main(
        ["capitals", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "out"), "--bootstrap", "-1", "--quiet"]
    )
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1
    assert error.startswith("interp: error: --bootstrap takes a whole number of resamples >= 0")
    assert not (tmp_path / "out").exists()


def test_paper_comparison_says_whether_the_paper_lies_in_our_interval():
    transplant = {
        task: {
            "layer": 19,
            "layer_ci": [18.0, 19.0],
            "rank_before": 12.0,
            "rank_before_ci": [11.0, 14.0],
            "rank_after": 4.5,
            "rank_after_ci": [3.5, 5.0],
            "no_effect_rate": 0.3,
            "no_effect_rate_ci": None,
        }
        for task in capitals.TASK_NAMES
    }
    comparison = capitals.paper_comparison(
        {"emergence_layer": 18, "emergence_layer_ci": [17.0, 18.5], "transplant": transplant}
    )
    assert comparison["emergence_layer"] == {"paper": 19, "ours": 18, "ours_ci": [17.0, 18.5], "inside_interval": False}
    assert comparison["o_vector_layer"]["past_tense"] == {
        "paper": 18,
        "ours": 19,
        "ours_ci": [18.0, 19.0],
        "inside_interval": True,
    }
    assert comparison["rank_before"]["capitals"]["inside_interval"] is False  # the paper's ~10 is below ours
    assert comparison["rank_after"]["capitals"]["inside_interval"] is True
    assert comparison["no_effect_rate"]["capitals"] == {"paper": 0.37, "ours": 0.3}  # no interval: nothing said
