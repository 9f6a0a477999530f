"""Results files: JSON with provenance, written atomically (temporary file, then rename).

`results.json` is deterministic: the same command, seed and machine give the same bytes. Wall-clock facts
(timestamps, durations) go to `timing.json` beside it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from functools import cache
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from interp.errors import InterpError

PACKAGES = ("interp", "torch", "transformers", "transformer-lens", "numpy")


def default_out_dir(experiment: str, model_spec: str) -> Path:
    """results/<experiment>/<model>/, the model named by its spec (a checkpoint directory by its last part)."""
    return Path("results") / experiment / re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model_spec).name or model_spec)


def versions() -> dict[str, str | None]:
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


CODE_PATHS = ("interp", "circuits", "pyproject.toml")  # what a result depends on; results/ and docs do not count


@cache
def git_commit(root: Path = Path(__file__).resolve().parent.parent) -> str | None:
    """The commit of the interp checkout this code runs from ("-dirty" when its code has uncommitted changes;
    results written by an earlier run, or edited docs, do not make it dirty)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *CODE_PATHS], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


@cache
def checkpoint_hash(directory: str | None) -> str | None:
    """sha256 over the weight files a checkpoint directory is loaded from: its safetensors files, or its .bin
    files when it has none (transformers' own preference; None for random weights)."""
    if directory is None:
        return None
    digest = hashlib.sha256()
    files = sorted(Path(directory).glob("*.safetensors")) or sorted(Path(directory).glob("*.bin"))
    for path in files:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def provenance(model, seed: int | None) -> dict:
    """Where a result came from: model and checkpoint, code, versions, seed, device, dtype, torch's thread count
    (it changes the order of float sums, so the last digits), command line."""
    source = model.interp_source
    return {
        "model": source.spec,
        "checkpoint_sha256": checkpoint_hash(source.checkpoint_dir),
        "init_seed": source.seed,
        "seed": seed,
        "git_commit": git_commit(),
        "versions": versions(),
        "device": str(model.cfg.device),
        "device_map": getattr(model, "interp_device_map", None),  # {module: device} when spread over GPUs
        "dtype": str(model.cfg.dtype).removeprefix("torch."),
        "torch_threads": torch.get_num_threads(),
        "command": " ".join(["interp" if i == 0 else arg for i, arg in enumerate(sys.argv)]),
    }


def jsonable(value):
    """Plain JSON types, floats rounded to 6 significant digits (stable text across runs), NaN refused."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InterpError(f"a result is {value}: the measurement is not a number")
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


@contextmanager
def atomic_path(path: str | Path):
    """Yields a temporary path beside `path`; renamed onto `path` only if the block finishes."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    except OSError as error:
        raise InterpError(f"cannot write to {path.parent}: {error.strerror}") from error
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | Path, data: dict) -> Path:
    text = json.dumps(jsonable(data), indent=2) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_array(path: str | Path, array: np.ndarray) -> dict:
    """An array saved with np.save, atomically; returns what a results file says of it (file, shape, dtype,
    sha256), so the file it belongs to can be checked against it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        np.save(tmp, array)
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    return {"file": path.name, "shape": list(array.shape), "dtype": str(array.dtype), "sha256": digest}


def read_json(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as error:
        raise InterpError(f"no results file at {path}") from error
    except json.JSONDecodeError as error:
        raise InterpError(f"{path} is not valid JSON ({error.msg} at line {error.lineno})") from error
