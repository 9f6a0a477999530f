"""Hugging Face cache snapshots laid out file for file as the hub serves `openai-community/gpt2*`.

What `snapshot_download("openai-community/gpt2", allow_patterns=[...])` leaves in the cache, with random weights
of the real shape instead of OpenAI's:
- config.json and generation_config.json as on the hub (GPT-2's `gelu_new`, `n_ctx`, task-specific params, ...);
- model.safetensors holding the *base* model's tensors without the `transformer.` prefix (`h.0.attn.c_attn.weight`,
  `wte.weight`, ...), the causal-mask buffers `h.N.attn.bias` the 2019 checkpoints carry, no `lm_head.weight`
  (tied to `wte`), metadata {"format": "pt"};
- vocab.json, merges.txt, tokenizer.json (ByteLevel pre-tokenizer and post-processor, `<|endoftext|>` as the one
  added token) and tokenizer_config.json (`{"model_max_length": 1024}`), as on the hub;
- the cache's own structure: blobs/ named by hash, snapshots/<commit>/ symlinks into them, refs/main.
LayerNorm gains and every bias are perturbed, so that weight processing (folding, centring) is really exercised.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "interp" / "assets" / "gpt2-tokenizer"
SHAPES = {"gpt2": (12, 12, 768), "gpt2-medium": (24, 16, 1024)}  # n_layer, n_head, n_embd
COMMITS = {
    "gpt2": "607a30d783dfa663caf39e06633721c8d4cfcd7e",  # snapshot folder names; any 40 hex digits work
    "gpt2-medium": "6dcaa7a952f72f9298047fd5137cd6e4f05f41da",
}


def hub_config(n_layer: int, n_head: int, n_embd: int, n_positions: int = 1024) -> dict:
    """config.json as the hub has it for the GPT-2 family (only the sizes differ between them)."""
    return {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": 50256,
        "embd_pdrop": 0.1,
        "eos_token_id": 50256,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_ctx": n_positions,
        "n_embd": n_embd,
        "n_head": n_head,
        "n_layer": n_layer,
        "n_positions": n_positions,
        "resid_pdrop": 0.1,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
        "vocab_size": 50257,
    }


GENERATION_CONFIG = {
    "_from_model_config": True,
    "bos_token_id": 50256,
    "eos_token_id": 50256,
    "transformers_version": "4.26.0.dev0",
}
TOKENIZER_CONFIG = {"model_max_length": 1024}


def hub_tokenizer_json() -> dict:
    """tokenizer.json as the hub serves it for GPT-2 (written by `tokenizers` in 2020): no BOS in the
    post-processor; `<|endoftext|>` is the only added token."""
    vocab = json.loads((TOKENIZER_DIR / "vocab.json").read_text())
    merges = [line for line in (TOKENIZER_DIR / "merges.txt").read_text().splitlines()[1:] if line]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": 50256,
                "special": True,
                "content": "<|endoftext|>",
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": True,
            }
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True},
        "model": {
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "vocab": vocab,
            "merges": merges,
        },
    }


def perturb_norms_and_biases(model):
    """HF's init leaves LayerNorm gains at 1 and every bias at 0, which makes weight folding trivially exact:
    perturb them so that weight processing is really tested."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias") or "ln" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


def random_hub_tensors(
    n_layer: int, n_head: int, n_embd: int, n_positions: int = 1024, seed: int = 0
) -> dict[str, torch.Tensor]:
    """The tensors of the hub's model.safetensors (base-model names, mask buffers), random, LNs and biases
    perturbed."""
    from transformers import GPT2Config, GPT2Model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = perturb_norms_and_biases(
            GPT2Model(GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=n_positions))
        )
    tensors = {name: param.detach().contiguous() for name, param in model.state_dict().items()}
    mask = torch.tril(torch.ones(n_positions, n_positions)).view(1, 1, n_positions, n_positions)
    tensors.update({f"h.{layer}.attn.bias": mask.clone() for layer in range(n_layer)})
    return tensors


def write_blob(repo: Path, snapshot: Path, name: str, data: bytes) -> None:
    """A file of the snapshot as huggingface_hub stores it: content in blobs/<hash>, a relative symlink."""
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    (snapshot / name).symlink_to(Path("..") / ".." / "blobs" / blob.name)


def hub_snapshot(
    cache: Path, name: str = "gpt2", shape: tuple[int, int, int] | None = None, n_positions: int = 1024, seed: int = 0
) -> Path:
    """Write `models--openai-community--<name>` into an HF cache directory; returns the snapshot directory.
    `shape` (n_layer, n_head, n_embd) defaults to the real model's."""
    from safetensors.torch import save

    n_layer, n_head, n_embd = shape or SHAPES[name]
    repo = Path(cache) / f"models--openai-community--{name}"
    commit = COMMITS.get(name, "0" * 40)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    as_json = lambda data: json.dumps(data, indent=2).encode()  # noqa: E731
    files = {
        "config.json": as_json(hub_config(n_layer, n_head, n_embd, n_positions)),
        "generation_config.json": as_json(GENERATION_CONFIG),
        "merges.txt": (TOKENIZER_DIR / "merges.txt").read_bytes(),
        "model.safetensors": save(
            random_hub_tensors(n_layer, n_head, n_embd, n_positions, seed), metadata={"format": "pt"}
        ),
        "tokenizer.json": json.dumps(hub_tokenizer_json()).encode(),
        "tokenizer_config.json": as_json(TOKENIZER_CONFIG),
        "vocab.json": (TOKENIZER_DIR / "vocab.json").read_bytes(),
    }
    for file_name, data in files.items():
        write_blob(repo, snapshot, file_name, data)
    return snapshot
