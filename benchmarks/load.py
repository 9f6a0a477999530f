"""Loading GPT-2 of every size: seconds, and host memory as a multiple of the weights' bytes.

    python benchmarks/load.py [--sizes gpt2,gpt2-medium,gpt2-large,gpt2-xl] [--dtypes float32,bfloat16]
                              [--bridge-processing]

Each load runs in a fresh process (a process's peak resident memory only ever grows), on random weights of the real
shape (`random:<size>`: the same tensors as the hub's). The anchor is the weights' own bytes (parameters counted
once, the tied embedding once): `peak_x` is the process's peak resident memory during `load_model`, `after_x` what it
holds once loaded, both above the memory it held before (Python, torch, transformers imported). With
`--bridge-processing` the same is measured for TransformerBridge's own compatibility-mode processing, which
interp's in-place processing replaces. The last line is `load <size>/<dtype> peak_x=<x> after_x=<x> ...`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

ONE_LOAD = r"""
import gc, json, resource, sys, time
import torch

def resident():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS"))

from interp.models import load_hf_model, load_model, release_freed_memory
from transformer_lens.model_bridge import TransformerBridge

spec, dtype, bridge_processing = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
before, start = resident(), time.perf_counter()
if bridge_processing:
    hf_model, tokenizer, source = load_hf_model(spec, getattr(torch, dtype), 0)
    model = TransformerBridge.boot_transformers("gpt2", hf_model=hf_model, tokenizer=tokenizer, device="cpu",
                                                dtype=getattr(torch, dtype))
    model.enable_compatibility_mode(disable_warnings=True)
    release_freed_memory()
else:
    model = load_model(spec, device="cpu", dtype=dtype)
seconds = time.perf_counter() - start
gc.collect()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
config = model.original_model.config
d, layers, vocab, positions = config.n_embd, config.n_layer, config.vocab_size, config.n_positions
n_params = vocab * d + positions * d + layers * (12 * d * d + 13 * d) + 2 * d  # GPT-2, embedding tied
weights = n_params * torch.empty((), dtype=getattr(torch, dtype)).element_size()
print(json.dumps({"seconds": seconds, "weight_bytes": weights, "peak_bytes": peak - before,
                  "after_bytes": resident() - before}))
"""


def measure(size: str, dtype: str, bridge_processing: bool) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", ONE_LOAD, f"random:{size}", dtype, str(int(bridge_processing))],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if result.returncode != 0:
        raise RuntimeError(f"loading {size} ({dtype}) failed: {result.stderr.strip().splitlines()[-1:]}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    return {
        **data,
        "peak_x": data["peak_bytes"] / data["weight_bytes"],
        "after_x": data["after_bytes"] / data["weight_bytes"],
    }


def run_benchmark(
    sizes=("gpt2", "gpt2-medium", "gpt2-large"),
    dtypes=("float32", "bfloat16"),
    bridge_processing: bool = False,
    quiet: bool = False,
) -> dict:
    say = (lambda *args: None) if quiet else (lambda *args: print(*args, flush=True))
    report = {}
    for size in sizes:
        for dtype in dtypes:
            ways = [("interp", False)] + ([("bridge", True)] if bridge_processing else [])
            for way, flag in ways:
                row = measure(size, dtype, flag)
                report[f"{size}/{dtype}/{way}"] = row
                say(
                    f"{size:>12} {dtype:>9} {way:>7}: {row['seconds']:6.1f} s  weights "
                    f"{row['weight_bytes'] / 2**30:5.2f} GiB  peak {row['peak_x']:.2f}x  after {row['after_x']:.2f}x"
                )
    last = [
        f"{key.rsplit('/', 1)[0]} peak_x={row['peak_x']:.2f} after_x={row['after_x']:.2f}"
        for key, row in report.items()
        if key.endswith("/interp")
    ]
    say("load " + "; ".join(last))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="gpt2,gpt2-medium,gpt2-large")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument(
        "--bridge-processing",
        action="store_true",
        help="also measure TransformerBridge's own weight processing, for comparison",
    )
    args = parser.parse_args()
    run_benchmark(args.sizes.split(","), args.dtypes.split(","), args.bridge_processing)


if __name__ == "__main__":
    main()
