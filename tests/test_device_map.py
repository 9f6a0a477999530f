"""One model spread over several devices (`--device-map`): accelerate's placement computed on a meta model for GPUs
this machine does not have, the whole path (dispatch, the bridge, the patching engine, the experiments) run on a
CPU map, and on two GPUs where there are two."""

import json

import pytest
import torch
from accelerate import init_empty_weights
from transformers import GPT2Config, GPT2LMHeadModel

from interp.cli import main
from interp.errors import InterpError
from interp.models import device_placement, load_model
from interp.patching import activation_patch, logit_diff_metric, path_patch
from interp.tokens import prompt_tokens, single_token_id

GIB = 2**30
CLEAN, CORRUPT = (
    "When Mary and John went to the store, John gave a drink to",
    "When Mary and John went to the store, Anna gave a drink to",
)


def meta_gpt2_medium():
    """GPT-2 medium's modules with no weights behind them, the unembedding untied as interp's processing leaves it."""
    with init_empty_weights():
        model = GPT2LMHeadModel(GPT2Config(n_layer=24, n_head=16, n_embd=1024))
    model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.lm_head.weight, device="meta"))
    return model


def blocks_on(placement: dict) -> list:
    return [placement[f"transformer.h.{i}"] for i in range(24)]


@pytest.mark.parametrize("kind", ["auto", "balanced"])
def test_blocks_are_placed_whole_and_in_order_over_two_gpus(kind):
    placement = device_placement(meta_gpt2_medium(), kind, torch.float32, max_memory={0: 1.2 * GIB, 1: 1.2 * GIB})
    devices = blocks_on(placement)
    assert devices == sorted(devices) and set(devices) == {0, 1}  # contiguous: the residual crosses over once
    assert placement["transformer.wte"] == 0 and placement["lm_head"] == placement["transformer.ln_f"] == 1


def test_balanced_evens_out_what_auto_fills_in_order():
    auto, balanced = (
        blocks_on(device_placement(meta_gpt2_medium(), kind, torch.float32, max_memory={0: 1.2 * GIB, 1: 1.2 * GIB}))
        for kind in ("auto", "balanced")
    )
    assert auto.count(0) > balanced.count(0) > 0


@pytest.mark.parametrize(
    "device_map, problem",
    [
        ({"transformer": 0, "lm_head": "cpu"}, "does not fit on the GPUs"),
        ({"transformer": "disk", "lm_head": "cpu"}, "does not fit on the GPUs"),
        ("sequential", "unknown device map"),
    ],
)
def test_maps_that_would_offload_are_refused(device_map, problem):
    with pytest.raises(InterpError, match=problem):
        device_placement(meta_gpt2_medium(), device_map, torch.float32)


@pytest.fixture(scope="module")
def organism():
    return load_model("organism", device="cpu")


EVERY_MODULE_ON_CPU = {
    "transformer.wte": "cpu",
    "transformer.wpe": "cpu",
    "transformer.drop": "cpu",
    **{f"transformer.h.{i}": "cpu" for i in range(4)},
    "transformer.ln_f": "cpu",
    "lm_head": "cpu",
}


@pytest.mark.parametrize("device_map", ["auto", "balanced", EVERY_MODULE_ON_CPU], ids=["auto", "balanced", "dict"])
def test_a_cpu_map_runs_the_whole_path(organism, device_map):
    """accelerate dispatches the model, the bridge boots on it, and logits, activation and path patching equal the
    single-device model's."""
    mapped = load_model("organism", device_map=device_map)
    assert mapped.interp_device_map == ({"": "cpu"} if isinstance(device_map, str) else device_map)
    assert mapped.original_model.hf_device_map == mapped.interp_device_map
    clean, corrupt = (prompt_tokens(organism, text, prepend_bos=False) for text in (CLEAN, CORRUPT))
    with torch.inference_mode():
        torch.testing.assert_close(mapped(clean), organism(clean), atol=1e-5, rtol=1e-5)
    metric = logit_diff_metric(
        single_token_id(" Mary", organism.tokenizer), single_token_id(" John", organism.tokenizer)
    )
    torch.testing.assert_close(
        activation_patch(mapped, clean, corrupt, metric, "head_out"),
        activation_patch(organism, clean, corrupt, metric, "head_out"),
    )
    torch.testing.assert_close(
        path_patch(mapped, clean, corrupt, metric, "resid_final"),
        path_patch(organism, clean, corrupt, metric, "resid_final"),
    )


def test_the_command_line_takes_a_device_map_and_records_it(capsys, tmp_path):
    assert (
        main(
            [
                "ioi",
                "--model",
                "organism",
                "--device-map",
                "auto",
                "--names",
                "organism",
                "--n",
                "6",
                "--quiet",
                "--random-knockouts",
                "1",
                "--greedy-steps",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "results.json").read_text())["device_map"] == {"": "cpu"}
    assert main(["lens", "x", "--model", "organism", "--device-map", "auto", "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == "interp: error: give a device or a device map, not both"
    assert main(["ioi", "--model", "organism", "--device-map", "auto", "--workers", "2"]) == 2
    assert "exclude each other" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_gpus_give_the_single_gpu_results():
    single = load_model("random:gpt2", device="cuda:0")
    spread = load_model("random:gpt2", device_map="balanced")
    assert len(set(spread.interp_device_map.values())) == 2
    clean, corrupt = (prompt_tokens(single, text) for text in (CLEAN, CORRUPT))
    metric = logit_diff_metric(single_token_id(" Mary", single.tokenizer), single_token_id(" John", single.tokenizer))
    for site in ("resid_pre", "head_out"):
        torch.testing.assert_close(
            activation_patch(spread, clean, corrupt, metric, site).cpu(),
            activation_patch(single, clean, corrupt, metric, site).cpu(),
            atol=1e-4,
            rtol=1e-4,
        )
    receivers = [(9, 9, "q"), (10, 0, "k"), (11, 2, "v")]
    torch.testing.assert_close(
        path_patch(spread, clean, corrupt, metric, receivers).cpu(),
        path_patch(single, clean, corrupt, metric, receivers).cpu(),
        atol=1e-4,
        rtol=1e-4,
    )
