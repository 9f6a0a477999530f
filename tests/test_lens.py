"""The logit lens against a hand computation on transformers' own model."""

import pytest
import torch
from transformers import GPT2LMHeadModel

from interp.errors import InterpError
from interp.lens import lens_json, logit_lens

PROMPT = "The capital of Poland is"


def hand_lens_log_probs(directory, tokens):
    """ln_f applied to each hidden state (embeddings, then each block's output), times the unembedding."""
    hf = GPT2LMHeadModel.from_pretrained(directory).eval()
    with torch.no_grad():
        out = hf(tokens, output_hidden_states=True)
        # HF's last hidden state already has ln_f applied; the others are raw block outputs.
        raw = list(out.hidden_states[:-1])
        lens = [hf.lm_head(hf.transformer.ln_f(h)) for h in raw] + [out.logits]
    return torch.stack([x[0].log_softmax(-1) for x in lens])  # [n_boundaries, pos, vocab]


def test_lens_matches_hand_computation(tiny_model, tiny_checkpoint):
    targets = [" Warsaw", " Poland"]
    result = logit_lens(tiny_model, PROMPT, targets=targets, top_k=3)
    expected = hand_lens_log_probs(tiny_checkpoint, tiny_model.to_tokens(PROMPT))
    n_boundaries = tiny_model.cfg.n_layers + 1
    assert result.top_ids.shape == (n_boundaries, expected.shape[1], 3)
    expected_top = expected.topk(3, dim=-1)
    assert torch.equal(result.top_ids, expected_top.indices)
    assert torch.allclose(result.top_probs, expected_top.values.exp(), atol=1e-5)
    ids = torch.tensor([tiny_model.to_single_token(t) for t in targets])
    assert torch.allclose(result.target_probs, expected[:, :, ids].exp(), atol=1e-6)
    # Ranks: the number of tokens clearly above the target, up to ties within float error.
    target = expected[:, :, ids][..., None]
    above = lambda margin: (expected[:, :, None, :] > target + margin).sum(-1) + 1  # noqa: E731
    assert (above(1e-5) <= result.target_ranks).all() and (result.target_ranks <= above(-1e-5)).all()


def test_lens_json_shape(tiny_model):
    data = lens_json(tiny_model, logit_lens(tiny_model, PROMPT, targets=[" Warsaw"]), "tiny")
    assert [layer["layer"] for layer in data["layers"]] == list(range(tiny_model.cfg.n_layers + 1))
    assert data["tokens"][0] == "<|endoftext|>" and len(data["layers"][0]["top_tokens"]) == 5
    assert set(data["layers"][-1]["targets"][" Warsaw"]) == {"prob", "rank"}


@pytest.mark.parametrize(
    "prompt, targets, problem",
    [
        ("", [], "the prompt is empty"),
        ("   ", [], "the prompt is empty"),
        (PROMPT, ["Warsaw"], "target 'Warsaw' is 2 GPT-2 tokens"),
        (PROMPT, [" Warsaw Poland"], "target ' Warsaw Poland' is 2 GPT-2 tokens"),
        (" word" * 80, [], "the prompt is 81 tokens; the model's context is 64"),
    ],
)
def test_lens_bad_input(tiny_model, prompt, targets, problem):
    with pytest.raises(InterpError, match=problem):
        logit_lens(tiny_model, prompt, targets=targets)
