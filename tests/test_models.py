"""Loading: every spec ends in a hooked model whose log-probs match transformers' GPT2LMHeadModel."""

import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import make_checkpoint
from hub_layout import perturb_norms_and_biases
from transformers import GPT2LMHeadModel

from interp.errors import InterpError
from interp.models import download_command, load_hf_model, load_model

PROMPT = "When Mary and John went to the store, John gave a drink to"


def log_probs_match(bridge, directory, prompt=PROMPT):
    tokens = bridge.to_tokens(prompt)
    reference = GPT2LMHeadModel.from_pretrained(directory).eval()
    with torch.no_grad():
        expected = reference(tokens).logits.log_softmax(-1)
        got = bridge(tokens).log_softmax(-1)
    return (got - expected).abs().max().item()


def test_random_gpt2_saved_and_reloaded_matches_transformers(tmp_path):
    model, _, _ = load_hf_model("random:gpt2", torch.float32, seed=0)
    assert (model.config.n_layer, model.config.n_head, model.config.n_embd) == (12, 12, 768)
    perturb_norms_and_biases(model).save_pretrained(tmp_path)
    bridge = load_model(str(tmp_path), device="cpu")
    assert bridge.cfg.n_layers == 12 and bridge.cfg.d_model == 768
    assert "blocks.11.attn.hook_z" in bridge.hook_dict
    assert log_probs_match(bridge, tmp_path) <= 1e-4


def test_random_specs_are_seeded():
    first = load_hf_model("random:gpt2", torch.float32, seed=3)[0].transformer.h[0].attn.c_attn.weight
    second = load_hf_model("random:gpt2", torch.float32, seed=3)[0].transformer.h[0].attn.c_attn.weight
    other = load_hf_model("random:gpt2", torch.float32, seed=4)[0].transformer.h[0].attn.c_attn.weight
    assert torch.equal(first, second) and not torch.equal(first, other)


def test_local_checkpoint_uses_bundled_tokenizer(tiny_checkpoint, tiny_model):
    assert not (tiny_checkpoint / "vocab.json").exists()
    assert tiny_model.to_tokens(PROMPT)[0, 1:].tolist() == [
        2215,
        5335,
        290,
        1757,
        1816,
        284,
        262,
        3650,
        11,
        1757,
        2921,
        257,
        4144,
        284,
    ]
    assert log_probs_match(tiny_model, tiny_checkpoint) <= 1e-4


def test_half_precision_on_request(tiny_checkpoint):
    bridge = load_model(str(tiny_checkpoint), device="cpu", dtype="bfloat16")
    assert bridge.W_U.dtype == torch.bfloat16
    assert bridge(bridge.to_tokens(PROMPT)).shape[-1] == 50257


def run_python(code, **env):
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
        timeout=300,
    )


def hf_cache_with_gpt2(root):
    """The layout huggingface_hub writes when it downloads openai-community/gpt2 (small weights here)."""
    repo = root / "models--openai-community--gpt2"
    snapshot = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    make_checkpoint(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(snapshot.name)
    return snapshot


def test_gpt2_from_hf_cache_offline(tmp_path):
    snapshot = hf_cache_with_gpt2(tmp_path)
    result = run_python(
        "from interp.models import load_model; m = load_model('gpt2', device='cpu'); "
        "print(m.interp_source.checkpoint_dir)",
        HF_HUB_CACHE=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(snapshot.name)


def test_gpt2_missing_offline_says_what_to_do(tmp_path):
    result = run_python(
        "from interp.models import load_model; load_model('gpt2-medium', device='cpu')", HF_HUB_CACHE=str(tmp_path)
    )
    assert result.returncode != 0
    command = download_command("gpt2-medium")
    assert command.startswith("hf download openai-community/gpt2-medium config.json") and command in result.stderr
    # the command exists where interp is installed, and takes those arguments
    hf = shutil.which("hf", path=os.path.dirname(sys.executable)) or shutil.which("hf")
    usage = subprocess.run([hf, "download", "--help"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 0 and "REPO_ID [FILENAMES]" in usage.stdout
    assert "local checkpoint directory" in result.stderr


@pytest.mark.parametrize(
    "spec, problem", [("gpt3", "unknown model spec 'gpt3'"), ("random:gpt5", "unknown model spec 'random:gpt5'")]
)
def test_unknown_specs(spec, problem):
    with pytest.raises(InterpError, match=problem):
        load_model(spec)


def test_directory_that_is_not_a_checkpoint(tmp_path):
    with pytest.raises(InterpError, match="no config.json"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InterpError, match="no weights"):
        load_model(str(tmp_path))


def test_corrupt_checkpoint(tiny_checkpoint, tmp_path):
    for name in ("config.json",):
        (tmp_path / name).write_bytes((tiny_checkpoint / name).read_bytes())
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InterpError, match="could not load the checkpoint"):
        load_model(str(tmp_path))


def test_unknown_dtype(tiny_checkpoint):
    with pytest.raises(InterpError, match="unknown dtype 'float8'"):
        load_model(str(tiny_checkpoint), dtype="float8")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(tiny_checkpoint):
    cpu = load_model(str(tiny_checkpoint), device="cpu")
    gpu = load_model(str(tiny_checkpoint), device="cuda")
    tokens = cpu.to_tokens(PROMPT)
    with torch.no_grad():
        diff = (cpu(tokens).log_softmax(-1) - gpu(tokens.cuda()).log_softmax(-1).cpu()).abs().max()
    assert diff <= 1e-3


def test_checkpoint_hash_covers_the_weights_that_are_loaded(tmp_path):
    """A full hub download holds pytorch_model.bin beside model.safetensors; transformers loads the latter."""
    import hashlib

    from interp.results import checkpoint_hash

    (tmp_path / "model.safetensors").write_bytes(b"safetensors bytes")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle bytes")
    assert checkpoint_hash(str(tmp_path)) == hashlib.sha256(b"safetensors bytes").hexdigest()
    (tmp_path / "model.safetensors").unlink()
    checkpoint_hash.cache_clear()
    assert checkpoint_hash(str(tmp_path)) == hashlib.sha256(b"pickle bytes").hexdigest()
