"""Every command on GPT-2 as researchers get it: by hub name from the Hugging Face cache (offline, real shapes), and
from a checkpoint directory that carries its own tokenizer files. Results files hold the exact data used, so that
the numbers can be recomputed from the file alone."""

import json
import os
import subprocess
import sys

import pytest
import torch

from interp.cli import main
from interp.models import load_model
from interp.tokens import GPT2_BOS, gpt2_tokenizer

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
DATASET_KEYS = {
    "prompts",
    "corrupt_prompts",
    "clean_tokens",
    "corrupt_tokens",
    "io_ids",
    "s_ids",
    "positions",
    "template_ids",
    "names",
    "prepend_bos",
}


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def check_ioi_dataset(results, n):
    """The dataset in results.json is the one that was run: tokens decode to the prompts, positions point at the
    names, BOS exactly as recorded."""
    data = results["dataset"]
    assert DATASET_KEYS <= set(data) and data["prepend_bos"] == results["prepend_bos"]
    assert set(data["positions"]) == {"IO", "S1", "S1+1", "S2", "END"}
    assert all(
        len(data[key]) == n
        for key in ("prompts", "corrupt_prompts", "clean_tokens", "corrupt_tokens", "io_ids", "s_ids", "template_ids")
    )
    tokenizer, bos = gpt2_tokenizer(), int(data["prepend_bos"])
    for i in range(n):
        end = data["positions"]["END"][i]
        for prompts, tokens in (("prompts", "clean_tokens"), ("corrupt_prompts", "corrupt_tokens")):
            row = data[tokens][i]
            assert tokenizer.decode(row[bos : end + 1]) == data[prompts][i]
            assert (row[0] == GPT2_BOS) == bool(bos)
        row = data["clean_tokens"][i]
        assert row[data["positions"]["IO"][i]] == data["io_ids"][i]
        assert row[data["positions"]["S1"][i]] == row[data["positions"]["S2"][i]] == data["s_ids"][i]
        assert data["positions"]["S1+1"][i] == data["positions"]["S1"][i] + 1


def check_capitals_results(results):
    assert isinstance(results["prepend_bos"], bool)
    for task, entry in results["tasks"].items():
        assert 1 <= len(entry["examples"]) <= 5
        assert set(entry["examples"][0]) == {"argument", "answer", "abstractive", "extractive", "cue_free"}
        transplant = results["transplant"][task]
        assert transplant["layers"] == list(range(max(transplant["layer"] - 1, 0), results["n_layers"]))
        assert transplant["positions"] in ("all", [-1])


def test_every_command_on_a_directory_with_tokenizer_files(capsys, tiny_hub_dir, tmp_path):
    model = str(tiny_hub_dir)
    lens = json.loads(run_cli(capsys, "lens", CLEAN, "--model", model, "--target", " Mary", "--json"))
    assert lens["tokens"][:2] == ["<|endoftext|>", "When"] and lens["prepend_bos"] is True
    lens = json.loads(
        run_cli(capsys, "lens", CLEAN, "--model", model, "--target", " Mary", "--json", "--no-prepend-bos")
    )
    assert lens["tokens"][0] == "When" and lens["prepend_bos"] is False
    patch = json.loads(
        run_cli(
            capsys,
            "patch",
            "--model",
            model,
            "--clean",
            CLEAN,
            "--corrupt",
            CORRUPT,
            "--answer",
            " Mary",
            "--wrong",
            " John",
            "--json",
        )
    )
    assert patch["clean_token_ids"][:2] == [GPT2_BOS, 2215] and len(patch["grid"][0]) == 15

    run_cli(capsys, "ioi", "--model", model, "--n", 8, "--random-circuits", 10, "--quiet", "--out", tmp_path / "ioi")
    check_ioi_dataset(json.loads((tmp_path / "ioi" / "results.json").read_text()), 8)
    run_cli(
        capsys,
        "capitals",
        "--model",
        model,
        "--n-prompts",
        3,
        "--ablation-ks",
        "0,1",
        "--n-texts",
        5,
        "--quiet",
        "--out",
        tmp_path / "capitals",
    )
    check_capitals_results(json.loads((tmp_path / "capitals" / "results.json").read_text()))
    run_cli(
        capsys,
        "discover",
        "--model",
        model,
        "--n",
        4,
        "--method",
        "eap",
        "--random-circuits",
        5,
        "--quiet",
        "--out",
        tmp_path / "discover",
    )
    check_ioi_dataset(json.loads((tmp_path / "discover" / "results.json").read_text()), 4)
    for run in ("ioi", "capitals", "discover"):
        assert "results.json" not in run_cli(capsys, "plot", tmp_path / run / "results.json")


def test_gpt2_commands_from_the_hf_cache(capsys, from_hub_cache, tmp_path):
    lens = json.loads(run_cli(capsys, "lens", CLEAN, "--model", "gpt2", "--target", " Mary", "--json"))
    assert len(lens["layers"]) == 13 and lens["layers"][-1]["targets"][" Mary"]["rank"] >= 1
    patch = json.loads(
        run_cli(
            capsys,
            "patch",
            "--model",
            "gpt2",
            "--clean",
            CLEAN,
            "--corrupt",
            CORRUPT,
            "--answer",
            " Mary",
            "--wrong",
            " John",
            "--site",
            "head_out",
            "--json",
        )
    )
    assert len(patch["grid"]) == 12 and len(patch["grid"][0]) == 12
    run_cli(
        capsys,
        "ioi",
        "--model",
        "gpt2",
        "--n",
        8,
        "--random-knockouts",
        2,
        "--greedy-steps",
        1,
        "--quiet",
        "--out",
        tmp_path,
    )
    results = json.loads((tmp_path / "results.json").read_text())
    check_ioi_dataset(results, 8)
    assert results["model"] == "gpt2" and "paper_comparison" in results
    assert set(results["heads"]) == {
        "name_mover",
        "negative_name_mover",
        "backup_name_mover",
        "s_inhibition",
        "induction",
        "duplicate_token",
        "previous_token",
    }
    paper = results["paper_circuit"]  # GPT-2 small's shape: the paper's 26 heads evaluated beside the found circuit
    assert len(paper["nodes"]) == 26 and set(paper["completeness"]["classes"]) == set(results["heads"])
    assert len(paper["minimality"]["9.0@END"]["k_v"]) == 13  # the paper's own K_v: name movers and negative ones
    assert run_cli(capsys, "plot", tmp_path / "results.json").count(".png") >= 2
    run_cli(
        capsys,
        "discover",
        "--model",
        "gpt2",
        "--n",
        2,
        "--method",
        "eap",
        "--random-circuits",
        5,
        "--quiet",
        "--out",
        tmp_path / "edges",
    )
    edges = json.loads((tmp_path / "edges" / "results.json").read_text())
    check_ioi_dataset(edges, 2)
    assert edges["graph"]["n_edges"] == 32491 and edges["head_comparison"]["source"].startswith("IOI paper")


def test_gpt2_medium_capitals_from_the_hf_cache(capsys, from_hub_cache, tmp_path):
    run_cli(
        capsys,
        "capitals",
        "--model",
        "gpt2-medium",
        "--n-prompts",
        3,
        "--ablation-ks",
        "0,1",
        "--n-texts",
        5,
        "--transplant-positions",
        "all",
        "--quiet",
        "--out",
        tmp_path,
    )
    results = json.loads((tmp_path / "results.json").read_text())
    check_capitals_results(results)
    assert results["n_layers"] == 24 and results["transplant"]["capitals"]["positions"] == "all"
    assert "paper_comparison" in results and results["skipped_tasks"] == {}
    assert results["tasks"]["colored_objects"]["table"] == "generated"
    # random weights of the real shape answer nothing, so the mechanism is measured on every prompt
    assert results["tasks"]["capitals"]["measured_on"] == "all prompts (the model answers fewer than two)"
    assert run_cli(capsys, "plot", tmp_path / "results.json").count(".png") == 3


def test_interp_ioi_gpt2_from_the_shell(from_hub_cache, tmp_path):
    """The command every researcher with real weights types, as a real process."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "interp",
            "ioi",
            "--model",
            "gpt2",
            "--n",
            "4",
            "--quiet",
            "--greedy-steps",
            "1",
            "--random-knockouts",
            "1",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ,
    )
    assert result.returncode == 0, result.stderr
    assert "mean logit diff" in result.stdout and (tmp_path / "results.json").is_file()


def test_direct_effect_recomputed_from_the_results_file_alone(capsys, tiny_hub_dir, tmp_path):
    """Path patching senders -> logits, redone with plain hooks from nothing but results.json: each head in turn
    takes its value on p_ABC, every later head is frozen to its clean value, MLPs recomputed."""
    run_cli(capsys, "ioi", "--model", tiny_hub_dir, "--n", 6, "--quiet", "--out", tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    data = results["dataset"]
    model = load_model(results["model"], device="cpu")
    clean, corrupt = torch.tensor(data["clean_tokens"]), torch.tensor(data["corrupt_tokens"])
    rows, end = torch.arange(len(clean)), torch.tensor(data["positions"]["END"])
    io, s = torch.tensor(data["io_ids"]), torch.tensor(data["s_ids"])
    z = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    with torch.inference_mode():
        _, clean_cache = model.run_with_cache(clean, names_filter=lambda name: name in z)
        _, corrupt_cache = model.run_with_cache(corrupt, names_filter=lambda name: name in z)

        def logit_diff(logits):
            final = logits[rows, end]
            return (final[rows, io] - final[rows, s]).mean().item()

        clean_ld = logit_diff(model(clean))
        assert clean_ld == pytest.approx(results["mean_logit_diff"], rel=1e-5)
        for layer in range(model.cfg.n_layers):
            for head in range(model.cfg.n_heads):

                def sender(value, hook, head=head, layer=layer):
                    value[:, :, head] = corrupt_cache[z[layer]][:, :, head]
                    return value

                frozen = [
                    (z[later], lambda value, hook: clean_cache[hook.name].clone())
                    for later in range(layer + 1, model.cfg.n_layers)
                ]
                patched = logit_diff(model.run_with_hooks(clean, fwd_hooks=[(z[layer], sender), *frozen]))
                expected = (patched - clean_ld) / abs(clean_ld)
                assert results["grids"]["direct_effect"][layer][head] == pytest.approx(expected, rel=1e-4, abs=1e-6)
