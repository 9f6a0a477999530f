"""Model specs -> hooked GPT-2 (a TransformerLens 4.x `TransformerBridge` in compatibility mode).

A spec is one of:
- `gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`: the hub when online, the Hugging Face cache when offline;
- a local Hugging Face checkpoint directory (config.json + weights; tokenizer files optional: the bundled GPT-2
  tokenizer is used when there are none);
- `random:<size>`: random-init weights of the real architecture, seeded (same compute as the real model);
- `organism`: the small GPT-2 trained by this project and shipped in the package (a local directory);
- `planted:ioi`, `planted:ioi:SEED`, `planted:capitals`: weights constructed so that a known circuit does the task
  (`interp.planted`), built in seconds.

Every path ends in the same place: an HF `GPT2LMHeadModel` handed to `TransformerBridge.boot_transformers`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from interp.errors import InterpError
from interp.tokens import gpt2_tokenizer

GPT2_SIZES = {  # name -> (n_layer, n_head, n_embd)
    "gpt2": (12, 12, 768),
    "gpt2-medium": (24, 16, 1024),
    "gpt2-large": (36, 20, 1280),
    "gpt2-xl": (48, 25, 1600),
}
HUB_REPOS = {name: (f"openai-community/{name}", name) for name in GPT2_SIZES}  # official id, legacy alias
ORGANISM_DIR = Path(__file__).parent / "organism" / "checkpoint"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
TOKENIZER_FILES = ("vocab.json", "merges.txt")
HUB_FILES = (
    "config.json",
    "generation_config.json",
    "merges.txt",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
)  # what interp reads of a hub GPT-2 repository
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@dataclass(frozen=True)
class ModelSource:
    """Where a loaded model came from (its provenance)."""

    spec: str
    checkpoint_dir: str | None  # None for random weights
    seed: int | None  # the init seed of random weights
    circuit: dict | None = None  # a planted model's circuit, {class: [(layer, head), ...]}: for comparison only
    circuit_edges: tuple[str, ...] | None = None  # ... and its edges (EAP-IG / MIB names), where known


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def available_devices() -> list[str]:
    found = ["cpu"]
    if torch.cuda.is_available():
        found += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def check_device(device: str | None) -> None:
    """A one-line error, before anything loads, for a device this machine does not have."""
    if device is None:
        return
    available = ", ".join(available_devices())
    try:
        kind = torch.device(device)
    except (RuntimeError, TypeError):
        raise InterpError(f"unknown device {device!r}; available here: {available}") from None
    if kind.type == "cpu":
        return
    if kind.type == "cuda" and torch.cuda.is_available():
        if kind.index is None or kind.index < torch.cuda.device_count():
            return
        raise InterpError(
            f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s); available here: {available}"
        )
    if kind.type == "mps" and torch.backends.mps.is_available():
        return
    why = " (this torch has no CUDA build)" if kind.type == "cuda" and torch.version.cuda is None else ""
    raise InterpError(f"device {device!r} is not available on this machine{why}; available here: {available}")


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise InterpError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def known_specs() -> list[str]:
    from interp.planted import SPECS

    return [*GPT2_SIZES, *(f"random:{name}" for name in GPT2_SIZES), "organism", *SPECS, "<checkpoint directory>"]


def check_checkpoint_dir(path: Path) -> Path:
    if not path.is_dir():
        raise InterpError(f"{path} is not a directory")
    if not (path / "config.json").is_file():
        raise InterpError(f"{path} is not a Hugging Face checkpoint: it has no config.json")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise InterpError(f"{path} is not a Hugging Face checkpoint: no weights ({' or '.join(WEIGHT_FILES)})")
    return path


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def download_command(name: str) -> str:
    """The shell command that puts a hub GPT-2 into the HF cache: only the files interp reads (the repository
    also holds TensorFlow, Flax, ONNX and TFLite copies, several GB for the larger sizes)."""
    return f"hf download {HUB_REPOS[name][0]} {' '.join(HUB_FILES)}"


def hub_checkpoint_dir(name: str) -> Path:
    """The local snapshot of a hub GPT-2: downloaded when online, found in the HF cache when offline."""
    from huggingface_hub import snapshot_download

    patterns = ["config.json", "*.safetensors", "*.json", *TOKENIZER_FILES]
    errors = []
    for repo_id in HUB_REPOS[name]:
        try:
            path = Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=hub_offline()))
            return check_checkpoint_dir(path)
        except InterpError as error:
            errors.append(str(error))
        except Exception as error:  # hub and cache errors come in many types; all mean "not here"
            errors.append(f"{repo_id}: {type(error).__name__}")
    where = "the Hugging Face cache (the hub is offline: HF_HUB_OFFLINE=1)" if hub_offline() else "the hub or cache"
    raise InterpError(
        f"weights for {name!r} were not found in {where} ({'; '.join(errors)}); download them where there is "
        f"network with `{download_command(name)}` (they land in the HF cache), "
        f"or pass the path of a local checkpoint directory as the model spec"
    )


def find_checkpoint(spec: str) -> Path | None:
    """The checkpoint directory a spec loads from (None: weights made in memory, random or planted), or a one-line
    error saying why there is none: an unknown spec, weights missing offline, a directory that is no checkpoint.
    Nothing is loaded, so a command can check every model it will need before it starts."""
    if spec.startswith("random:"):
        if spec.removeprefix("random:") not in GPT2_SIZES:
            raise InterpError(f"unknown model spec {spec!r}; known: {', '.join(known_specs())}")
        return None
    if spec.startswith("planted:"):
        from interp.planted import parse_planted

        parse_planted(spec)
        return None
    if spec == "organism":
        if not (ORGANISM_DIR / "config.json").is_file():
            raise InterpError(
                f"the organism checkpoint is missing from {ORGANISM_DIR}; rebuild it with `interp organism train`"
            )
        return ORGANISM_DIR
    if spec in GPT2_SIZES:
        return hub_checkpoint_dir(spec)
    if os.sep in spec or spec.startswith(".") or Path(spec).exists():
        return check_checkpoint_dir(Path(spec).expanduser())
    raise InterpError(f"unknown model spec {spec!r}; known: {', '.join(known_specs())}")


def load_hf_model(spec: str, dtype: torch.dtype, seed: int):
    """(GPT2LMHeadModel, tokenizer, ModelSource) for a spec."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    directory = find_checkpoint(spec)
    if spec.startswith("random:"):
        n_layer, n_head, n_embd = GPT2_SIZES[spec.removeprefix("random:")]
        config = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = GPT2LMHeadModel._from_config(config, dtype=dtype)  # made in its dtype: no float32 copy first
        return model, gpt2_tokenizer(), ModelSource(spec, None, seed)

    if spec.startswith("planted:"):
        from interp.planted import build_planted, planted_edges

        model, circuit = build_planted(spec)
        edges = planted_edges(spec)
        return (
            model.to(dtype),
            gpt2_tokenizer(),
            ModelSource(spec, None, None, circuit, None if edges is None else tuple(edges)),
        )

    try:
        model = GPT2LMHeadModel.from_pretrained(directory, dtype=dtype)
    except Exception as error:
        raise InterpError(
            f"could not load the checkpoint in {directory}: {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}"
        ) from error
    has_tokenizer = all((directory / name).is_file() for name in TOKENIZER_FILES)
    tokenizer = GPT2TokenizerFast.from_pretrained(directory) if has_tokenizer else gpt2_tokenizer()
    return model, tokenizer, ModelSource(spec, str(directory), None)


def load_model(
    spec: str = "organism",
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    seed: int = 0,
    device_map: str | dict | None = None,
):
    """A hooked GPT-2 (`TransformerBridge`, compatibility mode: TransformerLens hook names, processed weights).

    Weight processing (LayerNorm folding, centring) shifts each position's logits by a constant: logit
    differences and log-probs are unchanged, and those are what interp reports. `device_map` ("auto",
    "balanced" or {module: device}) spreads the blocks over several GPUs instead of putting the model on `device`
    (`placement`); the map is kept as `model.interp_device_map` and recorded in results.
    """
    from transformer_lens.model_bridge import TransformerBridge
    from transformers.utils import logging as hf_logging

    from interp.processing import process_in_place

    if device is not None and device_map is not None:
        raise InterpError("give a device or a device map, not both")
    check_device(device)
    check_device_map(device_map)
    hf_logging.disable_progress_bar()  # the per-load weight bar is noise next to interp's own progress
    dtype = resolve_dtype(dtype)
    hf_model, tokenizer, source = load_hf_model(spec, dtype, seed)
    # What compatibility mode's processing does, without a second copy of the weights; what it removed is kept.
    processing = process_in_place(hf_model)
    placement = None
    if device_map is not None:
        from accelerate import dispatch_model

        placement = device_placement(hf_model, device_map, dtype)
        dispatch_model(hf_model, placement)
    bridge = TransformerBridge.boot_transformers(
        source.checkpoint_dir or "gpt2",
        hf_model=hf_model,
        tokenizer=tokenizer,
        dtype=dtype,
        device=None if placement else device or default_device(),
    )
    bridge.enable_compatibility_mode(disable_warnings=True, no_processing=True)
    bridge.eval()
    bridge.interp_source = source
    bridge.interp_device_map = placement
    bridge.interp_processing = processing.to(bridge.W_E.device)
    release_freed_memory()
    return bridge


DEVICE_MAPS = ("auto", "balanced")


def check_device_map(device_map: str | dict | None) -> None:
    """A one-line error, before anything loads, for an unknown map or one naming a device this machine lacks."""
    if device_map is None:
        return
    if isinstance(device_map, dict):
        for target in set(device_map.values()):
            if target not in ("disk", "meta"):  # refused with their own message once placed
                check_device(f"cuda:{target}" if isinstance(target, int) else str(target))
    elif device_map not in DEVICE_MAPS:
        raise InterpError(f"unknown device map {device_map!r}; use {' or '.join(DEVICE_MAPS)}")


def device_placement(
    hf_model, device_map: str | dict, dtype: torch.dtype, max_memory: dict | None = None
) -> dict[str, str | int]:
    """{module: device} for a GPT-2: accelerate's placement of whole blocks over the GPUs ("auto" fills them in
    order, "balanced" evens them out; `max_memory` as accelerate takes it, default every GPU's free memory, or
    the CPU where there is none), or a map given as a dict. Every weight must sit where it is computed: a map that
    offloads to the CPU beside GPUs, or to disk, is refused."""
    import logging

    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory, get_max_memory

    if isinstance(device_map, dict):
        placement = dict(device_map)
    elif device_map in DEVICE_MAPS:
        if max_memory is None:
            max_memory = get_max_memory()
            gpus = {key: value for key, value in max_memory.items() if isinstance(key, int)}
            max_memory = gpus or max_memory
        no_split = ["GPT2Block"]
        accelerate_logger = logging.getLogger("accelerate.utils.modeling")
        level = accelerate_logger.level
        accelerate_logger.setLevel(logging.ERROR)  # "weights not tied": interp unties the unembedding on purpose
        try:
            if device_map == "balanced":
                max_memory = get_balanced_memory(hf_model, max_memory, no_split, dtype)
            placement = dict(infer_auto_device_map(hf_model, max_memory, no_split, dtype))
        finally:
            accelerate_logger.setLevel(level)
    else:
        raise InterpError(f"unknown device map {device_map!r}; use {' or '.join(DEVICE_MAPS)}")
    targets = {str(target) for target in placement.values()}
    if targets & {"disk", "meta"} or ("cpu" in targets and len(targets) > 1):
        raise InterpError(
            f"the model does not fit on the GPUs (device map: {sorted(targets)}); interp computes "
            "every layer where its weights are, so nothing may be offloaded to the CPU or disk"
        )
    return placement


def release_freed_memory() -> None:
    """Hand the heap memory that loading freed back to the operating system (glibc keeps it otherwise: gpt2-medium
    held 0.1x its weights' bytes more). A no-op where there is no glibc."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
