"""Dictionaries (sparse autoencoders, transcoders) laid out file for file as users have them on disk, with random
weights: SAE Lens's folders (the 2024 mats_sae_training layout of `gpt2-small-res-jb`, and what SAE Lens 6.54's
`save_model` writes for each inference architecture), those folders inside a Hugging Face hub cache, and sparsify's
checkpoints written by sparsify itself.

Plain functions; each returns the folder it wrote. See /tmp/research/saelens.md (sections 1-5) for the formats.

- `write_sae_lens_legacy`: `jbloom/GPT2-Small-SAEs-Reformatted/blocks.8.hook_resid_pre`: cfg.json with the legacy
  top-level keys (`hook_point`, `hook_point_layer`, `dtype` "torch.float32", training keys; no
  `model_from_pretrained_kwargs`: SAE Lens's release yaml injects that), `sae_weights.safetensors` (W_enc, b_enc, W_dec,
  b_dec, float32, no metadata), `sparsity.safetensors` (one tensor "sparsity" = log10 firing fraction).
- `write_hf_cache_release`: those folders in a hub cache (`models--jbloom--.../snapshots/<commit>/<folder>/...` as
  symlinks into `blobs/`, `refs/main`), where `snapshot_download(repo_id, allow_patterns=[f"{folder}/*"],
  local_files_only=True)` finds them once huggingface_hub's cache points there (HF_HUB_CACHE, or HF_HOME/hub, read
  when huggingface_hub is imported; in-process, patch `huggingface_hub.constants.HF_HUB_CACHE`).
- `write_sae_lens_6`: a 6.x folder exactly as `SAE.save_model` writes it (cfg.json keys in its order, `metadata`
  with `sae_lens_version` "6.54.12").
- `write_sparsify`: `SparseCoder(d_in, SaeConfig(...)).save_to_disk(parent / hookpoint)` after randomising it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

SAE_LENS_VERSION = "6.54.12"
ARCHITECTURES_6 = (
    "standard",
    "topk",
    "jumprelu",
    "gated",
    "transcoder",
    "skip_transcoder",
    "jumprelu_transcoder",
    "jumprelu_skip_transcoder",
)
GPT2_RES_JB = "jbloom/GPT2-Small-SAEs-Reformatted"
# Snapshot folder name of the release's repository in the cache (any 40 hex digits work).
GPT2_RES_JB_COMMIT = "57d08a4fd333fbf18caf3fbea63ceeb88e2f50d9"
GPT2_RES_JB_FOLDERS = [f"blocks.{layer}.hook_resid_pre" for layer in range(12)] + ["blocks.11.hook_resid_post"]


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(gen: torch.Generator, *shape: int, std: float = 1.0, mean: float = 0.0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * std + mean


def unit_rows(gen: torch.Generator, rows: int, cols: int) -> torch.Tensor:
    """Random directions, one per row (trained decoders have unit-norm rows)."""
    w = torch.randn(rows, cols, generator=gen)
    return w / w.norm(dim=-1, keepdim=True)


# ---------------------------------------------------------------------------------------------------------------
# SAE Lens, legacy (mats_sae_training, 2024): gpt2-small-res-jb


def legacy_cfg(hook: str, d_in: int, d_sae: int) -> dict:
    """cfg.json of `jbloom/GPT2-Small-SAEs-Reformatted/<hook>` as the hub serves it: mats_sae_training's
    LanguageModelSAERunnerConfig, keys in its order (SAE Lens's yaml adds `model_from_pretrained_kwargs` and
    `neuronpedia_id` on load; they are not in the file)."""
    layer = int(hook.split(".")[1])
    site = hook.rsplit("hook_", 1)[1]
    return {
        "model_name": "gpt2-small",
        "hook_point": hook,
        "hook_point_layer": layer,
        "hook_point_head_index": None,
        "dataset_path": "Skylion007/openwebtext",
        "is_dataset_tokenized": False,
        "context_size": 128,
        "use_cached_activations": False,
        "cached_activations_path": f"activations/Skylion007_openwebtext/gpt2-small/{hook}",
        "d_in": d_in,
        "n_batches_in_buffer": 128,
        "total_training_tokens": 300000000,
        "store_batch_size": 32,
        "device": "mps",
        "seed": 42,
        "dtype": "torch.float32",
        "b_dec_init_method": "geometric_median",
        "expansion_factor": d_sae // d_in,
        "from_pretrained_path": None,
        "l1_coefficient": 8e-05,
        "lr": 0.0004,
        "lr_scheduler_name": None,
        "lr_warm_up_steps": 5000,
        "train_batch_size": 4096,
        "use_ghost_grads": False,
        "feature_sampling_window": 1000,
        "feature_sampling_method": None,
        "resample_batches": 1028,
        "feature_reinit_scale": 0.2,
        "dead_feature_window": 5000,
        "dead_feature_estimation_method": "no_re_init",
        "dead_feature_threshold": 1e-08,
        "log_to_wandb": True,
        "wandb_project": f"mats_sae_training_gpt2_small_{site}_5",
        "wandb_entity": None,
        "wandb_log_frequency": 100,
        "n_checkpoints": 10,
        "checkpoint_path": "checkpoints/" + hashlib.sha1(hook.encode()).hexdigest()[:8],
        "d_sae": d_sae,
        "tokens_per_buffer": 67108864,
        "run_name": f"{d_sae}-L1-8e-05-LR-0.0004-Tokens-3.000e+08",
    }


def write_sae_lens_legacy(
    folder: str | Path,
    hook: str = "blocks.8.hook_resid_pre",
    d_in: int = 768,
    d_sae: int = 24576,
    seed: int = 0,
    processing: dict | None = None,
) -> Path:
    """A `gpt2-small-res-jb` folder (see the module's docstring). Weights: W_enc ~ N(0, 1/d_in), b_enc ~ -3.2, so
    an input of norm ~30 (GPT-2's residual stream at layer 8 is of that order) activates a few dozen of 24576
    features; unit-norm decoder rows; small b_dec. `processing` puts `model_from_pretrained_kwargs` at the top level
    of cfg.json, as in a copy saved from SAE Lens after its yaml override (the hub file has none)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = legacy_cfg(hook, d_in, d_sae)
    if processing is not None:
        cfg["model_from_pretrained_kwargs"] = processing
    (folder / "cfg.json").write_text(json.dumps(cfg))
    gen = generator(seed)
    weights = {
        "W_enc": randn(gen, d_in, d_sae, std=d_in**-0.5),
        "b_enc": randn(gen, d_sae, std=0.1, mean=-3.2),
        "W_dec": unit_rows(gen, d_sae, d_in),
        "b_dec": randn(gen, d_in, std=0.1),
    }
    save_file(weights, folder / "sae_weights.safetensors")
    density = 10 ** (torch.rand(d_sae, generator=gen) * -4 - 1)  # firing fractions 1e-5 .. 1e-1
    density[torch.rand(d_sae, generator=gen) < 0.01] = 0.0  # a few dead features
    save_file({"sparsity": torch.log10(density + 1e-10)}, folder / "sparsity.safetensors")
    return folder


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face hub cache


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    sha = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()


def tree_entry(data: bytes, lfs: bool) -> dict:
    """A file's entry in huggingface_hub's cached tree listing (`trees/<commit>.json`)."""
    if not lfs:
        return {"size": len(data), "blob_id": git_blob_sha1(data)}
    pointer = lfs_pointer(data)
    sha = hashlib.sha256(data).hexdigest()
    return {"size": len(data), "blob_id": git_blob_sha1(pointer), "lfs_sha256": sha, "lfs_size": len(data)}


def write_hf_cache_release(
    cache_dir: str | Path,
    repo_id: str = GPT2_RES_JB,
    folders: Sequence[str] = ("blocks.8.hook_resid_pre",),
    d_in: int = 768,
    d_sae: int = 24576,
    seed: int = 0,
    listed: Sequence[str] | None = None,
    commit: str = GPT2_RES_JB_COMMIT,
) -> Path:
    """`folders` of a legacy SAE Lens release (each `write_sae_lens_legacy`, its hook the folder's name) as
    `snapshot_download(repo_id, allow_patterns=[f"{folder}/*"])` leaves them in the cache `cache_dir`:
    `models--<owner>--<name>/blobs/<hash>` (LFS files named by their sha256, others by their git blob sha1),
    `snapshots/<commit>/<folder>/<file>` relative symlinks into blobs/, `refs/main` holding the commit. Returns the
    snapshot directory.

    `listed`: the folders of the repository's tree listing, which recent huggingface_hub versions cache beside
    (`trees/<commit>.json`, every file of the repository) and check the snapshot against when offline; None writes
    none, as older versions left the cache."""
    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs").mkdir(exist_ok=True)
    staging = repo / ".staging"
    entries = {}
    for index, name in enumerate(folders):
        written = write_sae_lens_legacy(staging / name, hook=name, d_in=d_in, d_sae=d_sae, seed=seed + index)
        (snapshot / name).mkdir()
        for file in sorted(written.iterdir()):
            data = file.read_bytes()
            lfs = file.suffix == ".safetensors"
            blob = repo / "blobs" / (hashlib.sha256(data).hexdigest() if lfs else git_blob_sha1(data))
            file.replace(blob)
            (snapshot / name / file.name).symlink_to(Path("..") / ".." / ".." / "blobs" / blob.name)
            entries[f"{name}/{file.name}"] = tree_entry(data, lfs)
        written.rmdir()
    staging.rmdir()
    if listed is not None:
        files = {"README.md": {"size": 24, "blob_id": git_blob_sha1(b"# GPT2-Small-SAEs-Reformatted\n")}}
        template = {path.split("/", 1)[1]: entry for path, entry in entries.items()}
        for name in listed:
            for file_name, entry in template.items():
                path = f"{name}/{file_name}"  # a folder not downloaded: the same sizes, its own blob ids
                files[path] = entries.get(path) or {**entry, "blob_id": git_blob_sha1(path.encode())}
        (repo / "trees").mkdir(exist_ok=True)
        (repo / "trees" / f"{commit}.json").write_text(
            json.dumps({"format_version": 1, "files": dict(sorted(files.items()))}, indent=1)
        )
    return snapshot


# ---------------------------------------------------------------------------------------------------------------
# SAE Lens 6.x


def layer_of(hook: str) -> int:
    return int(hook.split(".")[1])


def write_sae_lens_6(
    folder: str | Path,
    architecture: str = "standard",
    d_in: int = 16,
    d_sae: int = 32,
    hook: str | None = None,
    seed: int = 0,
    d_out: int | None = None,
    *,
    hook_out: str | None = None,
    k: int | None = None,
    rescale_acts_by_decoder_norm: bool = False,
    normalize_activations: str = "none",
    processing: dict | None = None,
    dtype: str = "float32",
    metadata: dict | None = None,
) -> Path:
    """A folder as SAE Lens 6.54's `save_model` writes it for `architecture` (one of ARCHITECTURES_6): cfg.json
    (`SAEConfig.to_dict()`: the dataclass fields in order, `metadata`, the subclass's fields, `architecture`) and
    sae_weights.safetensors (the state dict, no metadata, in `dtype`).

    hook: `metadata.hook_name` (default blocks.8.hook_resid_pre; a transcoder's blocks.8.ln2.hook_normalized);
    hook_out: a transcoder's `metadata.hook_name_out` (default blocks.L.hook_mlp_out); k: topk's (default 4);
    processing: `metadata.model_from_pretrained_kwargs` (absent when None); metadata: more metadata keys.
    Random weights: W_enc ~ N(0, 1/d_in) and biases around -0.3, so that unit-variance inputs turn on about a third
    of the features; positive JumpReLU thresholds; W_skip [d_out, d_in] as SAE Lens stores it."""
    if architecture not in ARCHITECTURES_6:
        raise ValueError(f"unknown SAE Lens architecture {architecture!r}")
    transcoder = architecture.endswith("transcoder")
    hook = hook or ("blocks.8.ln2.hook_normalized" if transcoder else "blocks.8.hook_resid_pre")
    d_out = d_out or d_in
    if not transcoder and d_out != d_in:
        raise ValueError("an autoencoder's d_out is its d_in")
    meta = {"sae_lens_version": SAE_LENS_VERSION, "sae_lens_training_version": SAE_LENS_VERSION}
    meta |= {"model_name": "gpt2-small", "hook_name": hook}
    if transcoder:
        meta["hook_name_out"] = hook_out or f"blocks.{layer_of(hook)}.hook_mlp_out"
    meta["hook_head_index"] = None
    if processing is not None:
        meta["model_from_pretrained_kwargs"] = processing
    meta |= metadata or {}
    cfg = {
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": dtype,
        "device": "cpu",
        "apply_b_dec_to_input": not transcoder,
        "normalize_activations": normalize_activations,
        "reshape_activations": "hook_z" if hook.endswith("hook_z") else "none",
        "metadata": meta,
    }
    if architecture == "topk":
        cfg |= {"k": 4 if k is None else k, "rescale_acts_by_decoder_norm": rescale_acts_by_decoder_norm}
    if transcoder:
        cfg["d_out"] = d_out
    cfg["architecture"] = architecture

    gen = generator(seed)
    weights = {"W_enc": randn(gen, d_in, d_sae, std=d_in**-0.5)}
    if architecture == "gated":
        weights |= {
            "b_gate": randn(gen, d_sae, std=0.3, mean=-0.3),
            "b_mag": randn(gen, d_sae, std=0.3),
            "r_mag": randn(gen, d_sae, std=0.2),
        }
    else:
        weights["b_enc"] = randn(gen, d_sae, std=0.3, mean=-0.3)
    weights["W_dec"] = randn(gen, d_sae, d_out, std=d_out**-0.5) * (1 + torch.rand(d_sae, 1, generator=gen))
    weights["b_dec"] = randn(gen, d_out, std=0.3)
    if "jumprelu" in architecture:
        weights["threshold"] = torch.rand(d_sae, generator=gen) * 0.6
    if "skip" in architecture:
        weights["W_skip"] = randn(gen, d_out, d_in, std=0.5 * d_in**-0.5)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    torch_dtype = getattr(torch, dtype.removeprefix("torch."))
    save_file({name: t.to(torch_dtype).contiguous() for name, t in weights.items()}, folder / "sae_weights.safetensors")
    return folder


# ---------------------------------------------------------------------------------------------------------------
# sparsify


def write_sparsify(
    folder_parent: str | Path,
    hookpoint: str,
    d_in: int = 16,
    num_latents: int = 64,
    k: int = 8,
    transcode: bool = False,
    skip: bool = False,
    seed: int = 0,
    activation: str = "topk",
) -> Path:
    """`folder_parent/hookpoint`, written by sparsify's own `SparseCoder.save_to_disk` (cfg.json: the
    SparseCoderConfig plus d_in; sae.safetensors: encoder.weight [num_latents, d_in], encoder.bias, W_dec
    [num_latents, d_in], b_dec, W_skip [d_in, d_in] with a skip connection). Every parameter is drawn at random
    (seeded) so that none keeps sparsify's init (zero biases, a decoder tied to the encoder or zero)."""
    from sparsify import SaeConfig, SparseCoder

    cfg = SaeConfig(activation=activation, num_latents=num_latents, k=k, transcode=transcode, skip_connection=skip)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        coder = SparseCoder(d_in, cfg)
    gen = generator(seed)
    with torch.no_grad():
        coder.encoder.weight.copy_(randn(gen, num_latents, d_in, std=d_in**-0.5))
        coder.encoder.bias.copy_(randn(gen, num_latents, std=0.3, mean=-0.2))
        coder.W_dec.copy_(unit_rows(gen, num_latents, d_in))
        coder.b_dec.copy_(randn(gen, d_in, std=0.3))
        if coder.W_skip is not None:
            coder.W_skip.copy_(randn(gen, d_in, d_in, std=0.5 * d_in**-0.5))
    folder = Path(folder_parent) / hookpoint
    coder.save_to_disk(folder)
    return folder
