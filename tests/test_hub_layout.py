"""GPT-2 exactly as the hub serves it: the snapshot layout, loading by hub name offline, and tokenization that gives
the same ids whichever copy of the tokenizer a model carries (the bundled one, a directory's, a hub snapshot's)."""

import json

import pytest
import torch
from hub_layout import SHAPES
from safetensors import safe_open
from transformers import GPT2LMHeadModel

from interp import models
from interp.circuits import capitals
from interp.data.ioi import ioi_datasets
from interp.lens import logit_lens
from interp.patching import patch_grid_for_cli
from interp.tokens import GPT2_BOS, encode, first_token_id, prompt_tokens, single_token_id

PROMPT = "When Mary and John went to the store, John gave a drink to"
PROMPT_IDS = [2215, 5335, 290, 1757, 1816, 284, 262, 3650, 11, 1757, 2921, 257, 4144, 284]
HUB_FILES = [
    "config.json",
    "generation_config.json",
    "merges.txt",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
]


def snapshot_of(cache, name):
    return next((cache / f"models--openai-community--{name}" / "snapshots").iterdir())


@pytest.mark.parametrize("name", ["gpt2", "gpt2-medium"])
def test_snapshot_is_laid_out_as_the_hub_serves_it(hub_cache, name):
    from tokenizers import Tokenizer

    snapshot = snapshot_of(hub_cache, name)
    assert sorted(p.name for p in snapshot.iterdir()) == HUB_FILES == sorted(models.HUB_FILES)  # what we download
    assert all(p.is_symlink() and p.resolve().parent.name == "blobs" for p in snapshot.iterdir())
    n_layer, n_head, n_embd = SHAPES[name]
    config = json.loads((snapshot / "config.json").read_text())
    assert (config["n_layer"], config["n_head"], config["n_embd"]) == (n_layer, n_head, n_embd)
    with safe_open(snapshot / "model.safetensors", "pt") as weights:
        keys = set(weights.keys())
        assert weights.metadata() == {"format": "pt"}
        assert weights.get_slice("wte.weight").get_shape() == [50257, n_embd]
    assert not any(key.startswith("transformer.") or key.startswith("lm_head") for key in keys)
    assert {f"h.{n_layer - 1}.attn.bias", f"h.{n_layer - 1}.mlp.c_proj.weight", "ln_f.bias"} <= keys
    assert Tokenizer.from_file(str(snapshot / "tokenizer.json")).encode(PROMPT).ids == PROMPT_IDS
    assert json.loads((snapshot / "tokenizer_config.json").read_text()) == {"model_max_length": 1024}


def test_gpt2_by_hub_name_loads_the_files_weights(hub_cache, hub_gpt2):
    """The bridge holds the snapshot's weights (not a fresh init that the prefix-less names failed to reach), and
    its log-probs are transformers' on the same files."""
    snapshot = snapshot_of(hub_cache, "gpt2")
    assert hub_gpt2.interp_source.checkpoint_dir == str(snapshot)
    with safe_open(snapshot / "model.safetensors", "pt") as weights:
        wpe = weights.get_tensor("wpe.weight")
    # compatibility mode centres what writes to the residual stream
    assert torch.allclose(hub_gpt2.W_pos, wpe - wpe.mean(-1, keepdim=True), atol=1e-6)
    reference = GPT2LMHeadModel.from_pretrained(snapshot).eval()
    tokens = prompt_tokens(hub_gpt2, PROMPT, prepend_bos=True)
    with torch.no_grad():
        expected = reference(tokens).logits.log_softmax(-1)
        assert (hub_gpt2(tokens).log_softmax(-1) - expected).abs().max() <= 1e-4


@pytest.fixture(params=["bundled", "directory", "hub"])
def any_source(request, tiny_model, tiny_hub_model, hub_gpt2):
    """One model per place a tokenizer comes from: the package (a checkpoint without tokenizer files), a
    directory's own files, a hub snapshot's (which TransformerBridge reloads with add_bos_token=True)."""
    return {"bundled": tiny_model, "directory": tiny_hub_model, "hub": hub_gpt2}[request.param]


def test_the_tokenizer_the_bridge_holds_would_add_bos(hub_gpt2):
    """Why interp never calls a model's tokenizer directly: for hub snapshots it prepends BOS on its own."""
    assert hub_gpt2.tokenizer(PROMPT)["input_ids"] == [GPT2_BOS] + PROMPT_IDS


@pytest.mark.parametrize("prepend_bos", [True, False])
def test_same_ids_whatever_the_tokenizer_source(any_source, prepend_bos):
    bos = [GPT2_BOS] if prepend_bos else []
    assert prompt_tokens(any_source, PROMPT, prepend_bos=prepend_bos)[0].tolist() == bos + PROMPT_IDS
    assert single_token_id(" Mary", any_source.tokenizer) == 5335
    assert first_token_id(" Baghdad", any_source.tokenizer) == first_token_id(" Baghdad")

    clean, corrupt = ioi_datasets(30, seed=1, tokenizer=any_source.tokenizer, prepend_bos=prepend_bos)
    bundled_clean, bundled_corrupt = ioi_datasets(30, seed=1, prepend_bos=prepend_bos)
    for ours, bundled in ((clean, bundled_clean), (corrupt, bundled_corrupt)):
        assert torch.equal(ours.tokens, bundled.tokens)
        assert all(torch.equal(ours.positions[k], bundled.positions[k]) for k in ours.positions)
        assert torch.equal(ours.io_ids, bundled.io_ids) and torch.equal(ours.s_ids, bundled.s_ids)
        # BOS exactly where it was asked for, nowhere else before the padding
        for row, end in zip(ours.tokens.tolist(), ours.positions["END"].tolist()):
            assert [i for i, t in enumerate(row[: end + 1]) if t == GPT2_BOS] == ([0] if prepend_bos else [])


@pytest.mark.parametrize("prepend_bos", [True, False])
def test_no_token_list_gains_a_bos_it_was_not_asked_for(any_source, prepend_bos):
    """Lens, patch, capitals readings and the memories' contexts: BOS first exactly when asked."""
    lens = logit_lens(any_source, PROMPT, targets=[" Mary"], prepend_bos=prepend_bos)
    assert lens.prepend_bos == prepend_bos
    assert (lens.str_tokens[0] == "<|endoftext|>") == prepend_bos and "<|endoftext|>" not in lens.str_tokens[1:]
    patched = patch_grid_for_cli(
        any_source,
        PROMPT,
        PROMPT.replace("John gave", "Mary gave"),
        " Mary",
        " John",
        "resid_pre",
        prepend_bos=prepend_bos,
    )
    for ids in (patched["clean_token_ids"], patched["corrupt_token_ids"]):
        assert [i for i, t in enumerate(ids) if t == GPT2_BOS] == ([0] if prepend_bos else [])
    assert len(patched["grid"][0]) == len(PROMPT_IDS) + prepend_bos

    items = capitals.task_items("capitals", 3, seed=0)
    reading = capitals.read(any_source, items, prepend_bos)
    by_hand = torch.tensor([[GPT2_BOS] * prepend_bos + encode(items[0].prompt)])  # the bundled tokenizer
    with torch.inference_mode():
        logits = any_source(by_hand)[0, -1]
    answer = capitals.first_ids([items[0].answer])[0]
    assert reading.answer_ranks[0, -1] == (logits > logits[answer]).sum() + 1
