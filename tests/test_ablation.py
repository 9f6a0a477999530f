"""Ablation against the same interventions done by hand on transformers' GPT2LMHeadModel."""

import pytest
import torch
from transformers import GPT2LMHeadModel

from interp.ablation import Component, ablated, heads, mean_activations, mlps, run_with_ablation
from interp.errors import InterpError

PROMPTS = ["When Mary and John went to the store, John gave", "When Anna and Paul went to the park, Paul said"]


@pytest.fixture(scope="module")
def hf(tiny_checkpoint):
    return GPT2LMHeadModel.from_pretrained(tiny_checkpoint).eval()


@pytest.fixture(scope="module")
def tokens(tiny_model):
    return tiny_model.to_tokens(PROMPTS)


def log_probs(logits):
    return logits.log_softmax(-1)


def hf_run(hf, tokens, hooks):
    handles = [
        module.register_forward_pre_hook(fn) if pre else module.register_forward_hook(fn) for module, fn, pre in hooks
    ]
    try:
        with torch.no_grad():
            return hf(tokens).logits
    finally:
        for handle in handles:
            handle.remove()


def test_zero_head_matches_hf(tiny_model, hf, tokens):
    d_head, d_model = tiny_model.cfg.d_head, tiny_model.cfg.d_model
    # Weight processing folds LN1's bias into the value bias and the value bias into the output bias, so
    # zeroing the processed z leaves that constant in: by hand, the head's slice of c_proj's input becomes
    # ln_1.bias @ W_V + b_V for that head.
    block = hf.transformer.h[1]
    v_slice = slice(2 * d_model + 3 * d_head, 2 * d_model + 4 * d_head)
    value_bias = (block.ln_1.bias @ block.attn.c_attn.weight[:, v_slice] + block.attn.c_attn.bias[v_slice]).detach()

    def zero_head(module, args):  # the input of c_proj is the heads' concatenated z
        z = args[0].clone()
        z[..., 3 * d_head : 4 * d_head] = value_bias
        return (z,)

    expected = hf_run(hf, tokens, [(hf.transformer.h[1].attn.c_proj, zero_head, True)])
    got = run_with_ablation(tiny_model, tokens, heads([(1, 3)]))
    assert (log_probs(got) - log_probs(expected)).abs().max() <= 1e-4
    assert (log_probs(got) - log_probs(tiny_model(tokens))).abs().max() > 1e-3  # the ablation did something


def test_mean_mlp_matches_hf(tiny_model, hf, tokens):
    captured = []
    hf_run(hf, tokens, [(hf.transformer.h[0].mlp, lambda m, i, o: captured.append(o), False)])
    mean = captured[0].mean(0, keepdim=True)
    expected = hf_run(hf, tokens, [(hf.transformer.h[0].mlp, lambda m, i, o: mean.expand_as(o), False)])
    means = mean_activations(tiny_model, tokens, mlps([0]))
    got = run_with_ablation(tiny_model, tokens, mlps([0]), "mean", means)
    assert (log_probs(got) - log_probs(expected)).abs().max() <= 1e-4


def test_group_means_are_per_group(tiny_model, tokens):
    # Each prompt its own group: its mean is itself, so mean ablation changes nothing.
    components = mlps([1]) + heads([(0, 0), (1, 2)])
    means = mean_activations(tiny_model, tokens, components, groups=torch.tensor([0, 1]))
    got = run_with_ablation(tiny_model, tokens, components, "mean", means, groups=torch.tensor([0, 1]))
    assert torch.allclose(got, tiny_model(tokens), atol=1e-5)


def test_hooks_removed_after_an_exception(tiny_model, tokens):
    clean = tiny_model(tokens)
    with pytest.raises(KeyboardInterrupt):
        with ablated(tiny_model, heads([(0, 1)]) + mlps([1])):
            raise KeyboardInterrupt
    assert torch.equal(tiny_model(tokens), clean)


@pytest.mark.parametrize(
    "components, method, problem",
    [
        ([Component("head", 2, 0)], "zero", "layer 2 is out of range: the model has layers 0..1"),
        ([Component("head", 0, 4)], "zero", "head 4 is out of range: the model has heads 0..3"),
        ([Component("mlp", -1)], "zero", "layer -1 is out of range"),
        (mlps([0]), "resample", "unknown ablation method 'resample'"),
        (mlps([0]), "mean", "mean ablation needs the reference means"),
    ],
)
def test_bad_ablations(tiny_model, tokens, components, method, problem):
    with pytest.raises(InterpError, match=problem):
        run_with_ablation(tiny_model, tokens, components, method)


def test_empty_reference(tiny_model):
    with pytest.raises(InterpError, match="reference dataset for mean ablation is empty"):
        mean_activations(tiny_model, torch.zeros((0, 5), dtype=torch.long), mlps([0]))
