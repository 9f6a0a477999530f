"""Half precision: every command takes --dtype (recorded in the results), and the engine and the experiments'
measurements stay close to float32 on a small trained model. Tolerances: bfloat16 keeps 8 bits of mantissa
(~2-3 significant digits), float16 11 bits; differences are measured against each grid's own range."""

import json

import pytest
import torch

from interp.cli import build_parser, main
from interp.discovery import Graph, edge_scores
from interp.models import load_model
from interp.patching import activation_patch, logit_diff_metric, path_patch

# max |half - float32| / range of the float32 grid; measured on these pairs: bfloat16 <= 0.018, float16 <= 0.002
TOLERANCE = {"bfloat16": 0.05, "float16": 0.01}


@pytest.fixture(scope="module")
def ioi_pairs():
    from interp.data.ioi import ioi_datasets
    from interp.data.ioi_words import ORGANISM_NAMES

    clean, corrupt = ioi_datasets(6, seed=2, names=ORGANISM_NAMES)
    return clean.tokens, corrupt.tokens, logit_diff_metric(clean.io_ids, clean.s_ids, clean.positions["END"])


@pytest.fixture(scope="module")
def float32_model():
    return load_model("organism", device="cpu")


def relative_error(half: torch.Tensor, full: torch.Tensor) -> float:
    keep = ~full.isnan()
    return float((half.float()[keep] - full[keep]).abs().max() / (full[keep].max() - full[keep].min()))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_patching_and_edge_scores_in_half_precision_stay_close_to_float32(dtype, float32_model, ioi_pairs):
    clean, corrupt, metric = ioi_pairs
    model = load_model("organism", device="cpu", dtype=dtype)
    assert model.cfg.dtype == getattr(torch, dtype)
    for site in ("resid_pre", "head_out"):
        half = activation_patch(model, clean, corrupt, metric, site)
        assert half.dtype == torch.float32  # metrics are read in float32 whatever the weights
        assert relative_error(half, activation_patch(float32_model, clean, corrupt, metric, site)) < TOLERANCE[dtype]
    receivers = "resid_final"
    assert (
        relative_error(
            path_patch(model, clean, corrupt, metric, receivers),
            path_patch(float32_model, clean, corrupt, metric, receivers),
        )
        < TOLERANCE[dtype]
    )
    sample = Graph.of(model).edge_names()[::15]  # exact patching in float16 is slow on CPU: a sample of edges
    for method, edges in (("eap", None), ("exact", sample)):
        half, full = (
            edge_scores(m, clean, corrupt, metric, method=method, edges=edges).scores for m in (model, float32_model)
        )
        assert relative_error(half, full) < TOLERANCE[dtype]


def test_every_command_that_loads_a_model_takes_dtype():
    parser = build_parser()
    for argv in (
        ["lens", "x"],
        ["patch", "--clean", "a", "--corrupt", "b", "--answer", "c", "--wrong", "d"],
        ["ioi"],
        ["capitals"],
        ["discover"],
        ["organism", "eval"],
    ):
        assert parser.parse_args([*argv, "--dtype", "bfloat16"]).dtype == "bfloat16", argv


def test_dtype_is_recorded_and_a_bad_one_is_one_line(tmp_path, capsys):
    assert (
        main(
            [
                "discover",
                "--model",
                "organism",
                "--dtype",
                "bfloat16",
                "--method",
                "eap",
                "--n",
                "4",
                "--out",
                str(tmp_path),
                "--quiet",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "results.json").read_text())["dtype"] == "bfloat16"
    capsys.readouterr()
    assert main(["ioi", "--model", "organism", "--dtype", "int3", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown dtype 'int3'" in err


def test_ioi_measurements_in_bfloat16_stay_close_to_float32(float32_model):
    from interp.circuits.ioi import Protocol, direct_logit_attribution, ld

    model = load_model("organism", device="cpu", dtype="bfloat16")
    clean, _ = Protocol(names="organism").datasets(model, 12, 0)
    full = direct_logit_attribution(float32_model, clean)
    assert relative_error(direct_logit_attribution(model, clean), full) < TOLERANCE["bfloat16"]
    assert float(ld(model, clean).float().mean()) == pytest.approx(float(ld(float32_model, clean).mean()), rel=0.05)
