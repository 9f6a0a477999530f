"""Selective caching: what was asked for, where it was asked for, at the size announced beforehand."""

import pytest
import torch

from interp.cache import cache_size_bytes, run_with_selective_cache
from interp.errors import InterpError

NAMES = ["blocks.0.hook_resid_pre", "blocks.1.attn.hook_z", "blocks.1.attn.hook_pattern", "blocks.0.mlp.hook_post"]


@pytest.fixture(scope="module")
def tokens(tiny_model):
    return tiny_model.to_tokens(["When Mary and John went to the store", "When Anna and Paul went to the park"])


def test_only_requested_hooks_and_same_values(tiny_model, tokens):
    logits, cache = run_with_selective_cache(tiny_model, tokens, NAMES)
    full_logits, full = tiny_model.run_with_cache(tokens)
    assert sorted(cache.keys()) == sorted(NAMES)
    assert torch.allclose(logits, full_logits)
    for name in NAMES:
        assert torch.equal(cache[name], full[name])


def test_positions_and_precision(tiny_model, tokens):
    _, cache = run_with_selective_cache(tiny_model, tokens, NAMES, positions=[2, -1], dtype=torch.bfloat16)
    _, full = tiny_model.run_with_cache(tokens)
    assert cache["blocks.1.attn.hook_z"].dtype == torch.bfloat16
    assert torch.allclose(cache["blocks.1.attn.hook_z"].float(), full["blocks.1.attn.hook_z"][:, [2, -1]], atol=1e-2)
    # patterns are sliced on the query axis, all keys kept
    assert cache["blocks.1.attn.hook_pattern"].shape == (2, 4, 2, tokens.shape[1])


@pytest.mark.parametrize("positions, dtype", [(None, None), ([0, 3], torch.float16)])
def test_size_estimate_is_exact(tiny_model, tokens, positions, dtype):
    estimate = cache_size_bytes(tiny_model, NAMES, *tokens.shape, positions=positions, dtype=dtype)
    _, cache = run_with_selective_cache(tiny_model, tokens, NAMES, positions=positions, dtype=dtype)
    assert estimate == sum(t.nelement() * t.element_size() for t in cache.values())


def test_regex_names(tiny_model, tokens):
    _, cache = run_with_selective_cache(tiny_model, tokens, r"blocks\.\d+\.hook_resid_post")
    assert sorted(cache.keys()) == [f"blocks.{l}.hook_resid_post" for l in range(tiny_model.cfg.n_layers)]


def test_refuses_over_budget(tiny_model, tokens):
    with pytest.raises(InterpError, match="over the budget"):
        run_with_selective_cache(tiny_model, tokens, NAMES, max_memory=1000)


@pytest.mark.parametrize(
    "names, positions, problem",
    [
        (["blocks.9.attn.hook_z"], None, "unknown hook 'blocks.9.attn.hook_z'"),
        (r"nothing\.like\.this", None, "no hook name matches"),
        (NAMES, [40], r"positions \[40\] are out of range"),
    ],
)
def test_bad_requests(tiny_model, tokens, names, positions, problem):
    with pytest.raises(InterpError, match=problem):
        run_with_selective_cache(tiny_model, tokens, names, positions=positions)
