"""Dictionaries against ground truth: the planted models' exact dictionaries (zero error), feature attribution that
must find planted:ioi's mechanism, planted capitals' vector in features, a dictionary trained with sparsify on
planted:ioi that must find its writes; and the dictionary commands' contracts."""

from __future__ import annotations

import json

import pytest
import torch

from interp.cli import main
from interp.dictionaries.splice import run_spliced, splice_for
from interp.engine import Transformer


@pytest.fixture(scope="module")
def planted_ioi():
    from interp import load_model

    return load_model("planted:ioi")


@pytest.fixture(scope="module")
def ioi_pairs(planted_ioi):
    from interp.task_runs import load_task, prepare

    return prepare(planted_ioi, load_task("ioi", planted_ioi, n=8))


@pytest.fixture(scope="module")
def planted_dictionaries():
    from interp.circuits.features import PLANTED_IOI_LAYERS
    from interp.planted.dictionaries import planted_dictionary

    return [planted_dictionary("planted:ioi", f"blocks.{layer}.hook_resid_pre") for layer in PLANTED_IOI_LAYERS]


def test_planted_dictionaries_are_exact(planted_ioi, ioi_pairs, planted_dictionaries):
    tokens = ioi_pairs.tokens.clean
    tf = Transformer(planted_ioi)
    splice = splice_for(planted_ioi, tokens, planted_dictionaries, keep_nodes=True)
    with torch.inference_mode():
        model = run_spliced(tf, tokens, splice_for(planted_ioi, tokens, []))
        run_spliced(tf, tokens, splice)
        rebuilt_splice = splice_for(planted_ioi, tokens, planted_dictionaries, output="reconstruction")
        rebuilt = run_spliced(tf, tokens, rebuilt_splice)
    for index, dictionary in enumerate(planted_dictionaries):
        nodes = splice.nodes[index]
        activation = dictionary.decode(nodes.features, nodes.input) + nodes.error
        assert float(nodes.error.norm(dim=-1).max() / activation.norm(dim=-1).max()) < 1e-5
    torch.testing.assert_close(rebuilt.log_softmax(-1), model.log_softmax(-1), atol=2e-3, rtol=1e-3)
    name = planted_dictionaries[0].labels.index("N:Mary")
    assert torch.allclose(planted_dictionaries[0].W_dec[name].norm(), torch.tensor(1.0))


def test_feature_attribution_finds_the_planted_mechanism(planted_ioi, ioi_pairs, planted_dictionaries):
    """The top 20 nodes of each prompt are planted directions of its own names and flags at the positions where
    the mechanism writes them, and they hold the mechanism's chain (N:S and D:S at S2, I:S and O:IO at END)."""
    from interp.circuits.features import planted_ioi_check
    from interp.dictionaries.features import attribute_features

    t = ioi_pairs.tokens
    attribution = attribute_features(
        planted_ioi, t.clean, t.corrupt, ioi_pairs.metric, planted_dictionaries, steps=5, per_prompt=True
    )
    check = planted_ioi_check(planted_ioi, ioi_pairs, planted_dictionaries, attribution)
    assert check["precision"] >= 0.85, check["examples"][0]
    assert check["recall"] >= 0.9, check["examples"][0]
    for errors in attribution.errors:  # exact dictionaries: nothing is left to their errors
        assert float(errors.abs().max()) < 1e-3


def test_the_capital_vector_is_the_planted_class_change():
    """planted:capitals's MLP 19 adds v_capital = (capital - country) class directions and flags: read by the
    planted dictionary at its output, those four features and nothing else, with no error."""
    from interp import load_model
    from interp.circuits.feature_vector import mlp_vector
    from interp.planted.dictionaries import planted_dictionary

    model = load_model("planted:capitals")
    found = mlp_vector(model, planted_dictionary("planted:capitals", "blocks.19.hook_mlp_out"), n=4, top=6)
    labels = [feature["label"] for feature in found["features"]]
    assert set(labels[:4]) == {"classes:capital", "-classes:country", "flags:capital", "-flags:country"}
    assert all(abs(feature["logit_effect"]["mean"]) < 1e-3 for feature in found["features"][4:])
    assert abs(found["error_share"]["mean"]) < 1e-4


@pytest.mark.slow
def test_a_dictionary_trained_on_planted_activations_finds_the_planted_writes(planted_ioi, tmp_path):
    """On 100,000 tokens (the README's run: 300,000) most planted directions are found at cosine >= 0.9, names and
    positions among them (a random direction's best cosine with 1,536 random rows in 768 dimensions averages
    0.12)."""
    from interp.circuits.feature_recovery import planted_recovery

    found = planted_recovery(planted_ioi, "blocks.0.hook_resid_pre", tmp_path, n_tokens=100_000)
    families = found["families"]
    assert found["share_recovered"] > 0.5, families
    assert families["name"]["median_cosine"] >= 0.9 and families["name"]["n"] >= 90
    assert families["pos"]["share_recovered"] >= 0.5 and families["pos"]["n"] == 64


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_features_command_json(capsys):
    code, out, err = run_cli(
        capsys,
        "features",
        "When Mary and John went to the store, John gave a drink to",
        "--dictionary",
        "organism:saes/blocks.2.hook_resid_pre",
        "--top-k",
        "3",
        "--json",
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["dictionary"]["hook"] == "blocks.2.hook_resid_pre" and data["dictionary"]["format"] == "sparsify"
    assert [p["token"] for p in data["positions"]][:3] == ["<|endoftext|>", "When", " Mary"]
    for position in data["positions"]:
        assert 1 <= len(position["features"]) <= 3
        ids = [feature for feature, _ in position["features"]]
        activations = [activation for _, activation in position["features"]]
        assert all(isinstance(i, int) and 0 <= i < 512 for i in ids) and activations == sorted(activations)[::-1]


def test_features_command_reads_planted_labels(capsys):
    code, out, err = run_cli(
        capsys, "features", "When Mary and John", "--model", "planted:ioi", "--dictionary",
        "planted:blocks.0.hook_resid_pre", "--top-k", "4", "--json",
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    mary = data["positions"][2]
    assert mary["token"] == " Mary"
    assert {data["feature_labels"][str(i)] for i, _ in mary["features"]} >= {"constant", "P2"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["features", "x", "--dictionary", "/nonexistent/sae"], "not a known SAE Lens release"),
        (["features", "x", "--dictionary", "planted:blocks.0.hook_resid_pre"], "planted model"),
        (["features", "x", "--dictionary", "organism:saes"], "holds 5 dictionaries"),
        (["features", "x", "--dictionary", "organism:nothing"], "ships no such dictionary"),
        (["features", "x", "--dictionary", "organism:saes/blocks.0.hook_resid_pre", "--top-k", "0"], "--top-k"),
        (["dictionaries", "train", "--out", "/tmp/x", "--hook", "blocks.0.attn.hook_q"], "cannot be spliced in"),
        (["dictionaries", "recovery", "--model", "organism"], "planted:ioi"),
    ],
)
def test_dictionary_commands_refuse_bad_input_in_one_line(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_attribute_command_writes_results_and_figures(capsys, tmp_path):
    code, out, err = run_cli(
        capsys, "dictionaries", "attribute", "--task", "ioi", "--n", "6", "--exact", "4", "--edges", "1",
        "--bootstrap", "50", "--steps", "3", "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["model"] == "organism" and len(data["nodes"]) == 4 and len(data["error_nodes"]) == 25
    assert data["agreement"]["pearson"] > 0.9
    assert {"clean_tokens", "corrupt_tokens"} <= set(data["data"])
    assert (tmp_path / "feature_circuit.png").is_file()
    (tmp_path / "feature_circuit.png").unlink()
    code, out, err = run_cli(capsys, "plot", str(tmp_path / "results.json"))
    assert code == 0, err and (tmp_path / "feature_circuit.png").is_file()
