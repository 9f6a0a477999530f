"""Dictionaries as users have them on disk: SAE Lens's folders and sparsify's checkpoints, from a directory or, by
SAE Lens's `release/sae_id`, from the Hugging Face cache.

SAE Lens (sae-lens 6.x, and the older layout its loaders convert): a folder with `cfg.json`,
`sae_weights.safetensors` (W_enc [d_in, d_sae], W_dec [d_sae, d_out], b_enc, b_dec; `threshold` for JumpReLU;
`b_gate`, `b_mag`, `r_mag` for gated; `W_skip` for skip transcoders) and an optional `sparsity.safetensors` (each
feature's log10 firing rate). Its hook names are TransformerLens's. The model's processing is
`metadata.model_from_pretrained_kwargs` (older files: `model_from_pretrained_kwargs` at the top level); when absent,
SAE Lens's default for TransformerLens models, `{"center_writing_weights": false}`: an uncentred residual stream.

sparsify (eai-sparsify 1.x): a folder per hookpoint with `cfg.json` (the SparseCoderConfig plus `d_in`) and
`sae.safetensors` (`encoder.weight` [d_sae, d_in], `encoder.bias`, `W_dec` [d_sae, d_out], `b_dec`, `W_skip`
[d_out, d_in] with a skip connection). Its hookpoints name the Hugging Face model's modules (`h.8`, `h.8.mlp`,
`transformer.h.8.attn`) or, for dictionaries trained here, TransformerLens hooks; either way sparsify hooks a model
as the hub serves it, so its activations are uncentred, and a transcoder reads the MLP's input after ln_2's affine
map. TopK only (sparsify's `groupmax` is refused).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from interp.dictionaries.dictionary import Convention, Dictionary, Site
from interp.errors import InterpError

SAE_LENS_FILES = ("cfg.json", "sae_weights.safetensors")
SPARSIFY_FILES = ("cfg.json", "sae.safetensors")
# SAE Lens's default processing for TransformerLens models, when a dictionary's metadata names none.
SAE_LENS_DEFAULT_PROCESSING = {"center_writing_weights": False}

# SAE Lens releases for GPT-2 small stored in its own layout (its pretrained_saes.yaml): release -> (hub repository,
# sae id -> folder in the repository, the model's processing where the release overrides the files' own).
RELEASES = {
    "gpt2-small-res-jb": (
        "jbloom/GPT2-Small-SAEs-Reformatted",
        {f"blocks.{layer}.hook_resid_pre": f"blocks.{layer}.hook_resid_pre" for layer in range(12)}
        | {"blocks.11.hook_resid_post": "blocks.11.hook_resid_post"},
        {"center_writing_weights": True},
    ),
    **{
        f"gpt2-small-{site.replace('_', '-')}-v5-{size}": (
            f"jbloom/GPT2-Small-OAI-v5-{size}-{site.replace('_', '-')}-SAEs",
            {
                f"blocks.{layer}.hook_{site}": f"v5_{size}_layer_{layer}" + (".pt" if site == "resid_post" else "")
                for layer in range(12)
            },
            None,
        )
        for site in ("resid_post", "resid_mid", "mlp_out", "attn_out")
        for size in ("32k", "128k")
    },
}


def load_dictionary(spec: str | Path, device=None, dtype=None) -> Dictionary:
    """A dictionary from a folder (SAE Lens or sparsify, told apart by their files) or an SAE Lens
    `release/sae_id` found in the Hugging Face cache (offline) or on the hub."""
    path, processing, name = Path(spec).expanduser(), None, None
    if not path.exists():
        path, name = release_folder(str(spec)), str(spec)
        processing = RELEASES[str(spec).partition("/")[0]][2]
    if not path.is_dir():
        raise InterpError(f"{spec}: not a dictionary folder")
    files = {p.name for p in path.iterdir()}
    if set(SAE_LENS_FILES) <= files:
        dictionary = read_sae_lens(path, processing, name)
    elif set(SPARSIFY_FILES) <= files:
        dictionary = read_sparsify(path)
    else:
        raise InterpError(
            f"{path} holds no dictionary: SAE Lens's has {' and '.join(SAE_LENS_FILES)}, "
            f"sparsify's {' and '.join(SPARSIFY_FILES)}"
        )
    return dictionary.to(device=device, dtype=dtype)


ORGANISM_DICTIONARIES = Path(__file__).resolve().parent.parent / "organism" / "dictionaries"


def load_dictionaries(spec: str, model=None, device=None) -> list[Dictionary]:
    """The dictionaries a command-line spec names: a dictionary folder; a folder of them (a training run: every
    dictionary in it, in hook order); an SAE Lens `release/sae_id`; `organism:RUN[/HOOK]`, the organism's shipped
    dictionaries (`saes`, `transcoders`); `planted:HOOK`, the planted model's exact dictionary there."""
    if spec.startswith("planted:"):
        from interp.planted.dictionaries import planted_dictionary

        if model is None or not model.interp_source.spec.startswith("planted:"):
            raise InterpError(f"{spec}: planted dictionaries go with a planted model (--model planted:ioi)")
        return [planted_dictionary(model.interp_source.spec, spec.removeprefix("planted:")).to(device)]
    path = Path(spec).expanduser()
    if spec.startswith("organism:"):
        path = ORGANISM_DICTIONARIES / spec.removeprefix("organism:")
        if not path.exists():
            shipped = sorted(p.name for p in ORGANISM_DICTIONARIES.iterdir()) if ORGANISM_DICTIONARIES.is_dir() else []
            raise InterpError(f"{spec}: the organism ships no such dictionary (runs: {', '.join(shipped) or 'none'})")
    if path.is_dir() and not (path / "cfg.json").is_file():
        folders = sorted(p for p in path.iterdir() if (p / "cfg.json").is_file())
        if folders:
            found = [load_dictionary(folder, device) for folder in folders]
            return sorted(found, key=lambda d: (d.writes.boundary, d.label()))
    return [load_dictionary(path if path.exists() else spec, device)]


def release_folder(spec: str) -> Path:
    """The local folder of an SAE Lens `release/sae_id`."""
    from huggingface_hub import snapshot_download

    from interp.models import hub_offline

    release, _, sae_id = spec.partition("/")
    if release not in RELEASES:
        raise InterpError(
            f"{spec}: no such folder, and not a known SAE Lens release/sae_id (releases: {', '.join(RELEASES)})"
        )
    repo_id, folders, _ = RELEASES[release]
    if sae_id not in folders:
        raise InterpError(f"{release} has no SAE {sae_id!r}; its ids: {', '.join(folders)}")
    try:
        snapshot = snapshot_download(repo_id, allow_patterns=[f"{folders[sae_id]}/*"], local_files_only=hub_offline())
    except Exception as error:  # hub and cache errors come in many types; all mean "not here"
        where = "the Hugging Face cache (offline)" if hub_offline() else "the hub or the cache"
        raise InterpError(
            f"{spec} was not found in {where} ({type(error).__name__}); download it where there is network with "
            f"`hf download {repo_id} --include '{folders[sae_id]}/*'`, or pass its folder"
        ) from None
    folder = Path(snapshot) / folders[sae_id]
    if not folder.is_dir():
        raise InterpError(
            f"{spec}: {repo_id} in the cache has no folder {folders[sae_id]}; download it where there is network "
            f"with `hf download {repo_id} --include '{folders[sae_id]}/*'`"
        )
    return folder


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InterpError(f"{path}: not readable JSON ({error})") from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return {name: tensor.float() for name, tensor in load_file(path).items()}
    except Exception as error:
        raise InterpError(f"{path}: not a readable safetensors file ({type(error).__name__}: {error})") from None


# SAE Lens's architectures -> (interp's encoder, a transcoder?, a skip connection?)
SAE_LENS_ARCHITECTURES = {
    "standard": ("standard", False, False),
    "topk": ("topk", False, False),
    "jumprelu": ("jumprelu", False, False),
    "gated": ("gated", False, False),
    "transcoder": ("standard", True, False),
    "skip_transcoder": ("standard", True, True),
    "jumprelu_transcoder": ("jumprelu", True, False),
    "jumprelu_skip_transcoder": ("jumprelu", True, True),
}


def read_sae_lens(path: Path, processing: dict | None = None, name: str | None = None) -> Dictionary:
    """An SAE Lens folder; `processing` (model_from_pretrained_kwargs) overrides the files' own, as a release's
    config_overrides do. SAE Lens loads its model with `from_pretrained_no_processing(**kwargs)`: writing weights
    uncentred, value biases unfolded, LayerNorms unfolded, unless the kwargs say otherwise."""
    cfg = read_json(path / "cfg.json")
    weights = read_tensors(path / "sae_weights.safetensors")
    metadata = cfg.get("metadata") or {}
    hook = cfg.get("hook_name") or metadata.get("hook_name") or cfg.get("hook_point")
    if hook is None:
        raise InterpError(f"{path / 'cfg.json'} names no hook (hook_name)")
    head = cfg.get("hook_head_index", metadata.get("hook_head_index", cfg.get("hook_point_head_index")))
    if head is not None:
        raise InterpError(f"{path}: dictionaries of a single head (hook_head_index={head}) are not read")
    named = cfg.get("architecture", "standard")
    if cfg.get("activation_fn_str", cfg.get("activation_fn")) == "topk" and named == "standard":
        named = "topk"  # SAE Lens 5.x's way of saying it
    if named not in SAE_LENS_ARCHITECTURES:
        raise InterpError(
            f"{path}: unknown architecture {named!r}; interp reads SAE Lens's {', '.join(SAE_LENS_ARCHITECTURES)}"
        )
    architecture, transcoder, skip = SAE_LENS_ARCHITECTURES[named]
    hook_out = cfg.get("hook_name_out") or metadata.get("hook_name_out")
    if transcoder and hook_out is None:
        raise InterpError(f"{path}: a transcoder whose cfg.json names no output hook (metadata.hook_name_out)")
    if processing is None:
        processing = metadata.get("model_from_pretrained_kwargs", cfg.get("model_from_pretrained_kwargs"))
    processing = SAE_LENS_DEFAULT_PROCESSING if processing is None else processing
    needed = ["W_enc", "W_dec", "b_dec"] + (["b_gate", "b_mag", "r_mag"] if architecture == "gated" else ["b_enc"])
    needed += ["threshold"] if architecture == "jumprelu" else []
    needed += ["W_skip"] if skip else []
    missing = [tensor for tensor in needed if tensor not in weights]
    if missing:
        raise InterpError(f"{path / 'sae_weights.safetensors'} lacks {', '.join(missing)} (a {named} dictionary)")
    W_enc, W_dec = weights["W_enc"], weights["W_dec"]
    b_enc = weights.get("b_enc", torch.zeros(W_enc.shape[1]))  # gated dictionaries have none
    if cfg.get("rescale_acts_by_decoder_norm"):  # SAE Lens's fold_W_dec_norm: the same function, unit decoder rows
        norm = W_dec.norm(dim=-1).clamp(min=1e-8)
        W_enc, b_enc, W_dec = W_enc * norm, b_enc * norm, W_dec / norm[:, None]
    site = Site.parse(hook)
    if transcoder and site.kind != "mlp_in":
        raise InterpError(f"{path}: interp reads transcoders of the MLP (blocks.L.ln2.hook_normalized), not of {hook}")
    return Dictionary(
        W_enc,
        b_enc,
        W_dec,
        weights["b_dec"],
        site,
        architecture,
        site_out=Site.parse(hook_out) if transcoder else None,
        convention=Convention(
            centred=bool(processing.get("center_writing_weights", False)),
            value_biases_folded=bool(processing.get("fold_value_biases", False)),
            affine_mlp_input=hook.endswith("mlp.hook_in") and not processing.get("fold_ln", False),
        ),
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", not transcoder)),
        k=cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k"),
        threshold=weights.get("threshold"),
        b_gate=weights.get("b_gate"),
        b_mag=weights.get("b_mag"),
        r_mag=weights.get("r_mag"),
        W_skip=weights["W_skip"].T.contiguous() if skip else None,  # stored [d_out, d_in]
        normalize_activations=cfg.get("normalize_activations") or "none",
        name=name or str(path),
        source_format="sae_lens",
    )


# sparsify hookpoints (Hugging Face module names of GPT2Model) -> what they read, as TransformerLens names
HF_HOOKPOINTS = {
    r"(?:transformer\.)?h\.(\d+)": "blocks.{}.hook_resid_post",
    r"(?:transformer\.)?h\.(\d+)\.attn": "blocks.{}.hook_attn_out",
    r"(?:transformer\.)?h\.(\d+)\.mlp": "blocks.{}.hook_mlp_out",
}


def sparsify_site(hookpoint: str) -> Site:
    for pattern, hook in HF_HOOKPOINTS.items():
        if match := re.fullmatch(pattern, hookpoint):
            return Site.parse(hook.format(match.group(1)))
    return Site.parse(hookpoint)


def read_sparsify(path: Path) -> Dictionary:
    cfg = read_json(path / "cfg.json")
    weights = read_tensors(path / "sae.safetensors")
    if cfg.get("activation", "topk") != "topk":
        raise InterpError(f"{path}: sparsify's {cfg['activation']!r} activation is not read (TopK only)")
    missing = [name for name in ("encoder.weight", "encoder.bias", "W_dec", "b_dec") if name not in weights]
    if missing:
        raise InterpError(f"{path / 'sae.safetensors'} lacks {', '.join(missing)}")
    site = sparsify_site(path.name)
    transcoder = bool(cfg.get("transcode"))
    if transcoder and site.kind != "mlp_out":
        raise InterpError(f"{path}: interp reads sparsify transcoders of the MLP only, not of {path.name!r}")
    W_skip = weights.get("W_skip")
    return Dictionary(
        weights["encoder.weight"].T.contiguous(),
        weights["encoder.bias"],
        weights["W_dec"],
        weights["b_dec"],
        Site("mlp_in", site.layer) if transcoder else site,
        "topk",
        site_out=site if transcoder else None,
        convention=Convention(centred=False, affine_mlp_input=True),
        apply_b_dec_to_input=not transcoder,
        k=int(cfg.get("k", 32)),
        W_skip=None if W_skip is None else W_skip.T.contiguous(),
        name=str(path),
        source_format="sparsify",
    )
