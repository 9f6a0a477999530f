"""Shared fixtures: small GPT-2 checkpoints made on the spot (real weights are not available offline)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("INTERP_TEST_THREADS", "2")))


def make_checkpoint(path, n_layer=2, n_head=4, n_embd=64, n_positions=64, seed=0):
    """A random GPT-2 checkpoint whose LayerNorms and biases are perturbed, so that weight processing
    (LayerNorm folding, centring) is really exercised: HF's init has LN gains 1 and all biases 0."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=n_positions))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias") or "ln" in name:
                param.add_(0.1 * torch.randn_like(param))
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from interp.models import load_model

    return load_model(str(tiny_checkpoint), device="cpu")
