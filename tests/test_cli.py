"""The `interp` command: JSON contracts, and bad input as one line on stderr with a non-zero exit."""

import json
import os
import subprocess
import sys

import pytest
import torch

from interp.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_lens_json(capsys, tiny_checkpoint, tmp_path):
    code, out, err = run_cli(
        capsys,
        "lens",
        "The capital of Poland is",
        "--model",
        str(tiny_checkpoint),
        "--target",
        " Warsaw",
        "--top-k",
        "3",
        "--json",
        "--out",
        str(tmp_path),
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["model"] == str(tiny_checkpoint)
    assert data["tokens"] == ["<|endoftext|>", "The", " capital", " of", " Poland", " is"]
    assert len(data["layers"]) == 3  # embeddings + 2 blocks
    assert all(
        len(layer["top_tokens"]) == 3 and set(layer["targets"][" Warsaw"]) == {"prob", "rank"}
        for layer in data["layers"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lens.json", "lens.png", "lens.svg"]


@pytest.mark.parametrize(
    "argv, problem",
    [
        (["lens", "hello", "--model", "gpt3"], "unknown model spec 'gpt3'"),
        (["lens", "", "--model", "{tiny}"], "the prompt is empty"),
        (["lens", "hello", "--model", "{tiny}", "--target", "Warsaw"], "target 'Warsaw' is 2 GPT-2 tokens"),
        (["lens", "hello", "--model", "{tiny}", "--top-k", "0"], "top-k must be at least 1"),
        (["lens", "hello", "--model", "{empty}"], "is not a Hugging Face checkpoint"),
        (["lens", "hello", "--model", "{tiny}", "--dtype", "int3"], "unknown dtype 'int3'"),
        (["lens"], "the following arguments are required: prompt"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["bench", "load", "--model", "gpt2"], "benchmark 'load' takes no --model"),
    ],
)
def test_bad_input_is_one_line(capsys, tiny_checkpoint, tmp_path, argv, problem):
    argv = [a.format(tiny=tiny_checkpoint, empty=tmp_path) for a in argv]
    code, out, err = run_cli(capsys, *argv)
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("interp: error:") and problem in err, err


def test_missing_weights_offline_from_the_shell(tmp_path):
    """A real process: one line on stderr, exit 2, no traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "interp", "lens", "hello", "--model", "gpt2"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path)},
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "weights for 'gpt2' were not found" in result.stderr


def test_patch_memory_budget(capsys, tiny_checkpoint):
    """Refused with a clear message when even one chunk is over the budget; chunked to the same grid otherwise."""
    argv = [
        "patch",
        "--model",
        str(tiny_checkpoint),
        "--clean",
        "When Mary and John went to the store, John gave",
        "--corrupt",
        "When Mary and John went to the store, Mary gave",
        "--answer",
        " Mary",
        "--wrong",
        " John",
        "--json",
    ]
    code, out, err = run_cli(capsys, *argv, "--max-memory", "0.01")
    assert code == 2 and err.count("\n") == 1 and "MiB" in err and "budget" in err, err
    code, unbounded, _ = run_cli(capsys, *argv)
    code_small, chunked, _ = run_cli(capsys, *argv, "--max-memory", "2")
    assert code == code_small == 0
    grid = lambda text: torch.tensor(json.loads(text)["grid"])  # noqa: E731
    assert torch.allclose(grid(chunked), grid(unbounded), atol=1e-5)
