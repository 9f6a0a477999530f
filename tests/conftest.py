"""Shared fixtures: small GPT-2 checkpoints made on the spot (real weights are not available offline)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("INTERP_TEST_THREADS", "2")))


def make_checkpoint(path, n_layer=2, n_head=4, n_embd=64, n_positions=64, seed=0):
    """A random GPT-2 checkpoint whose LayerNorms and biases are perturbed, so that weight processing
    (LayerNorm folding, centring) is really exercised: HF's init has LN gains 1 and all biases 0."""
    from hub_layout import perturb_norms_and_biases
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=n_positions))
    perturb_norms_and_biases(model).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from interp.models import load_model

    return load_model(str(tiny_checkpoint), device="cpu")


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory):
    """A Hugging Face cache holding openai-community/gpt2 and gpt2-medium laid out file for file as the hub serves
    them (random weights of the real shapes): the path every researcher with real weights takes."""
    from hub_layout import hub_snapshot

    root = tmp_path_factory.mktemp("hf-cache")
    for name in ("gpt2", "gpt2-medium"):
        hub_snapshot(root, name)
    return root


def use_hf_cache(monkeypatch, root):
    """Point this process (huggingface_hub read its settings at import) and its children at `root`, offline."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root))


@pytest.fixture
def from_hub_cache(hub_cache, monkeypatch):
    """`gpt2` and `gpt2-medium` load from `hub_cache`, here and in subprocesses and notebook kernels."""
    use_hf_cache(monkeypatch, hub_cache)
    return hub_cache


@pytest.fixture(scope="session")
def hub_gpt2(hub_cache):
    """GPT-2 small's shape loaded by its hub name from `hub_cache`."""
    from interp.models import load_model

    with pytest.MonkeyPatch.context() as monkeypatch:
        use_hf_cache(monkeypatch, hub_cache)
        return load_model("gpt2", device="cpu")


@pytest.fixture(scope="session")
def tiny_hub_dir(tmp_path_factory):
    """A small checkpoint directory that carries its own tokenizer files, as a hub snapshot does."""
    from hub_layout import hub_snapshot

    return hub_snapshot(tmp_path_factory.mktemp("tiny-hub-cache"), "gpt2", shape=(2, 4, 64))


@pytest.fixture(scope="session")
def tiny_hub_model(tiny_hub_dir):
    from interp.models import load_model

    return load_model(str(tiny_hub_dir), device="cpu")
