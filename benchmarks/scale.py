"""The same IOI run in one process and on local Ray clusters of 1 and 2 workers (and, on a machine with several
GPUs, one worker per GPU): wall times and their ratios to the single-process run, measured in the same process.

    python benchmarks/scale.py [--model planted:ioi] [--n 20] [--threads N]

On 2 CPU cores the ratio is bounded by the cores (two workers of one thread each against one process of two
threads): the line shows Ray's overhead (starting the cluster, loading the model in every worker, shipping the
shards) more than a speed-up. Results of every run are checked equal to the single-process run's (to 1e-5) before
any time is reported. The last line printed is
`scale n=<N> single_s=<s> ray1_s=<s> ray2_s=<s> ray1_vs_single=<x>x ray2_vs_single=<x>x [gpus=<g> ray_gpus_s=<s>]`.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from interp.circuits.ioi import Protocol, run  # noqa: E402
from interp.models import load_model  # noqa: E402
from interp.workers import ModelRecipe, RayWorkers  # noqa: E402

PROTOCOL = Protocol(random_knockouts=3, greedy_steps=2, greedy_candidates=3)


def largest_difference(a, b) -> float:
    """The largest difference between two results' numbers (provenance aside); inf where their shapes differ."""
    if isinstance(a, dict):
        keys = set(a) - {"workers", "ray_address", "worker_devices", "command", "torch_threads"}
        return max((largest_difference(a[k], b.get(k)) for k in keys), default=0.0)
    if isinstance(a, (list, tuple)):
        if not isinstance(b, (list, tuple)) or len(a) != len(b):
            return math.inf
        return max((largest_difference(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, float):
        return abs(a - b) / max(1.0, abs(a))
    return 0.0 if a == b else math.inf


def timed_run(model, n: int, seed: int, workers=None) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        results = run(model, out, n=n, seed=seed, quiet=True, protocol=PROTOCOL, workers=workers)
        return time.perf_counter() - start, results


def ray_run(model, model_spec: str, device: str, count: int, n: int, seed: int) -> tuple[float, dict]:
    """Wall time from starting the cluster to the results: what `--workers N` costs a user."""
    start = time.perf_counter()
    with RayWorkers(ModelRecipe(model_spec, device, "float32"), count, quiet=True) as workers:
        _, results = timed_run(model, n, seed, workers)
    return time.perf_counter() - start, results


def run_benchmark(model_spec: str = "planted:ioi", quiet: bool = False, n: int = 20, seed: int = 0) -> dict:
    say = (lambda *args: None) if quiet else (lambda *args: print(*args, flush=True))
    model = load_model(model_spec)
    device = str(model.cfg.device)
    say(f"{model_spec}: IOI with {n} prompts on {device}; {torch.get_num_threads()} threads in this process")
    single, reference = timed_run(model, n, seed)
    say(f"{'one process':>22}: {single:7.1f} s")
    report = {
        "model": model_spec,
        "n": n,
        "device": device,
        "threads": torch.get_num_threads(),
        "single_seconds": single,
        "ray": {},
    }
    counts = [1, 2]
    gpus = torch.cuda.device_count()
    if gpus > 1:
        counts.append(gpus)
    for count in counts:
        seconds, results = ray_run(model, model_spec, device, count, n, seed)
        difference = largest_difference(reference, results)
        if difference > 1e-5:
            raise SystemExit(f"{count} Ray workers differ from the single process by {difference:g}")
        report["ray"][count] = {"seconds": seconds, "vs_single": seconds / single, "largest_difference": difference}
        say(
            f"{f'{count} Ray workers':>22}: {seconds:7.1f} s  {seconds / single:5.2f}x the single process  "
            f"(largest difference {difference:.1g})"
        )
    line = (
        f"scale n={n} single_s={single:.1f} ray1_s={report['ray'][1]['seconds']:.1f} "
        f"ray2_s={report['ray'][2]['seconds']:.1f} ray1_vs_single={report['ray'][1]['vs_single']:.2f}x "
        f"ray2_vs_single={report['ray'][2]['vs_single']:.2f}x"
    )
    if gpus > 1:
        line += f" gpus={gpus} ray_gpus_s={report['ray'][gpus]['seconds']:.1f}"
    say(line)
    return report


if __name__ == "__main__":
    from benchmarks.ioi import main

    main(run_benchmark, __doc__, default_n=20)
