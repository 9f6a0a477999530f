"""Dictionaries: feature attribution beside node attribution, training throughput, peak memory, in one run.

    python benchmarks/dictionaries.py [--model organism] [--n 100] [--threads N]     (or: interp bench dictionaries)

On N IOI pairs (the paper's p_IOI / p_ABC, logit difference at END) with the model's dictionaries spliced in (the
organism's shipped SAEs; the planted dictionaries on planted:ioi):
- anchor: one forward of the N clean prompts through the engine;
- node attribution: attribution patching of every layer's residual stream (`interp.attribution`, one forward
  and backward), the node-level method feature attribution refines;
- feature attribution: every feature and error node of every dictionary (`interp.dictionaries.features`,
  integrated gradients with Marks et al.'s 10 steps, one dictionary at a time);
- training: sparsify on the model's activations at one hook (tokens per second), beside the forward's own tokens
  per second;
- peak memory of each phase over the weights' bytes (resident memory sampled every 2 ms; on a GPU, torch's peak).
The last line is `ratios feature_vs_node=<x>x feature_vs_forward=<y>x training_vs_forward=<z>x
peak_feature_vs_weights=<m>x`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from interp.attribution import attribution_patch  # noqa: E402
from interp.circuits.features import default_dictionaries  # noqa: E402
from interp.dictionaries.features import attribute_features  # noqa: E402
from interp.dictionaries.splice import run_spliced, splice_for  # noqa: E402
from interp.dictionaries.training import train_dictionaries, training_tokens  # noqa: E402
from interp.engine import Transformer  # noqa: E402
from interp.metric_reader import make_reader  # noqa: E402
from interp.models import load_model  # noqa: E402
from interp.task_runs import load_task, prepare  # noqa: E402


class PeakMemory:
    """Peak memory during a block, above what was in use when it began: resident memory sampled on the CPU,
    torch's allocator peak on a GPU."""

    def __init__(self, device: str):
        self.cuda = str(device).startswith("cuda")

    @staticmethod
    def resident() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * 4096

    def __enter__(self):
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
            return self
        self.start = self.peak = self.resident()
        self.running = True

        def sample():
            while self.running:
                self.peak = max(self.peak, self.resident())
                time.sleep(0.002)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self.running = False
            self.thread.join()
        self.bytes = self.peak - self.start


def timed(function, device):
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        value = function()
        seconds = time.perf_counter() - start
    return value, seconds, memory.bytes


def run_benchmark(model_spec: str = "organism", quiet: bool = False, n: int = 100, train_tokens: int = 200_000) -> dict:
    say = (lambda *args: None) if quiet else (lambda *args: print(*args, flush=True))
    model = load_model(model_spec)
    device = model.cfg.device
    prepared = prepare(model, load_task("ioi", model, n))
    tokens, metric = prepared.tokens, prepared.metric
    dictionaries = default_dictionaries(model)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    mean_metric = replace(metric, fn=lambda logits: metric.fn(logits).mean())
    reader = make_reader(metric, *tokens.clean.shape, device)
    engine = Transformer(model, reader.token_ids)

    def forward():
        with torch.inference_mode():
            return run_spliced(engine, tokens.clean, splice_for(model, tokens.clean, []), reader)

    forward()  # warm-up
    _, forward_s, _ = timed(forward, device)
    _, node_s, node_bytes = timed(
        lambda: attribution_patch(model, tokens.clean, tokens.corrupt, mean_metric, "resid_pre"), device
    )
    _, feature_s, feature_bytes = timed(
        lambda: attribute_features(model, tokens.clean, tokens.corrupt, metric, dictionaries, steps=10), device
    )
    stream = training_tokens(model, train_tokens, 64, seed=0)
    hook = dictionaries[len(dictionaries) // 2].site.hook
    with tempfile.TemporaryDirectory() as scratch:
        _, train_s, train_bytes = timed(
            lambda: train_dictionaries(model, [hook], Path(scratch) / "run", tokens=stream, quiet=True), device
        )
    forward_tokens_per_s = tokens.clean.numel() / forward_s
    train_tokens_per_s = stream.numel() / train_s
    report = {
        "model": model_spec,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "n_pairs": len(tokens),
        "dictionaries": [d.label() for d in dictionaries],
        "d_sae": [d.d_sae for d in dictionaries],
        "forward_s": forward_s,
        "node_attribution_s": node_s,
        "feature_attribution_s": feature_s,
        "training_hook": hook,
        "training_tokens": stream.numel(),
        "training_s": train_s,
        "training_tokens_per_s": train_tokens_per_s,
        "forward_tokens_per_s": forward_tokens_per_s,
        "weights_bytes": weights,
        "peak_bytes": {"node_attribution": node_bytes, "feature_attribution": feature_bytes, "training": train_bytes},
        "ratios": {
            "feature_vs_node": feature_s / node_s,
            "feature_vs_forward": feature_s / forward_s,
            "training_vs_forward": train_tokens_per_s / forward_tokens_per_s,
            "peak_feature_vs_weights": feature_bytes / weights,
        },
    }
    say(f"{model_spec} on {device}, {torch.get_num_threads()} threads; {len(tokens)} IOI pairs; dictionaries:")
    say("  " + ", ".join(f"{d.label()} ({d.d_sae})" for d in dictionaries))
    say(f"forward of the clean prompts (anchor): {forward_s * 1e3:.1f} ms ({forward_tokens_per_s:,.0f} tokens/s)")
    say(f"node attribution (attribution patching, resid_pre): {node_s:.2f} s, peak {node_bytes / 2**20:.0f} MiB")
    say(f"feature attribution (IG, 10 steps): {feature_s:.2f} s, peak {feature_bytes / 2**20:.0f} MiB")
    say(
        f"training at {hook}: {stream.numel():,} tokens in {train_s:.1f} s = {train_tokens_per_s:,.0f} tokens/s, "
        f"peak {train_bytes / 2**20:.0f} MiB"
    )
    ratios = report["ratios"]
    say(
        f"ratios feature_vs_node={ratios['feature_vs_node']:.1f}x "
        f"feature_vs_forward={ratios['feature_vs_forward']:.0f}x "
        f"training_vs_forward={ratios['training_vs_forward']:.3f}x "
        f"peak_feature_vs_weights={ratios['peak_feature_vs_weights']:.2f}x"
    )
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="organism")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run_benchmark(args.model, n=args.n)
