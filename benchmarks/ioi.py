"""The whole IOI pipeline's cost at GPT-2 small's shape: every discovery step and the evaluation, as `interp ioi`
runs them.

    python benchmarks/ioi.py [--model planted:ioi] [--n 100] [--threads N]

`planted:ioi` (the default) has GPT-2 small's shape and a circuit in every class, so every step runs (on
random:gpt2 the steps after the first find nothing and are skipped). The anchor, measured in the same process, is
one forward pass of the N clean prompts; each step is reported in seconds, in prompt-forwards (one prompt through
the model once) and in anchors. The last line printed is
`ioi n=<N> wall_s=<s> forward_s=<anchor> prompt_forwards=<k> wall_vs_forward=<x>x discovery_s=<s> evaluation_s=<s>
selection_stability_share=<fraction> template_holdout_s=<s> random_circuits_s=<s>`: the selection frequencies'
share of the run (they resample numbers, not forwards); the hold-out and the random circuits are their own costs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from interp.circuits.ioi import Protocol, run  # noqa: E402
from interp.models import load_model  # noqa: E402

SURENESS_STEPS = ("selection_stability", "template_holdout", "random_circuits")


def forward_seconds(model, tokens, repeats: int = 3) -> float:
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            model(tokens)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_benchmark(model_spec: str = "planted:ioi", quiet: bool = False, n: int = 100, seed: int = 0) -> dict:
    """Run the pipeline once; print a report ending with the summary line unless quiet; return every number."""
    say = (lambda *args: None) if quiet else (lambda *args: print(*args, flush=True))
    model = load_model(model_spec)
    clean, _ = Protocol().datasets(model, n, seed)
    anchor = forward_seconds(model, clean.tokens)
    say(
        f"{model_spec}: {model.cfg.n_layers} layers x {model.cfg.n_heads} heads, d_model {model.cfg.d_model}; "
        f"{n} prompts of up to {clean.tokens.shape[1]} tokens; {torch.get_num_threads()} threads; "
        f"one forward of the {n} prompts: {anchor:.3f} s"
    )
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        results = run(model, out, n=n, seed=seed, quiet=quiet)
        wall = time.perf_counter() - start
        steps = json.loads((Path(out) / "timing.json").read_text())["steps"]
    for name, step in steps.items():
        say(
            f"{name:>26}: {step['seconds']:8.1f} s  {step['forward_passes']:7d} prompt-forwards  "
            f"{step['seconds'] / anchor:7.0f} anchors"
        )
    evaluation = steps["evaluation"]["seconds"]
    separate = {name: steps.get(name, {"seconds": 0.0})["seconds"] for name in SURENESS_STEPS}
    report = {
        "model": model_spec,
        "n": n,
        "threads": torch.get_num_threads(),
        "wall_seconds": wall,
        "forward_seconds": anchor,
        "prompt_forwards": results["forward_passes"],
        "steps": steps,
        "discovery_seconds": sum(
            step["seconds"] for name, step in steps.items() if name not in ("evaluation", *SURENESS_STEPS)
        ),
        "evaluation_seconds": evaluation,
        **{f"{name}_seconds": seconds for name, seconds in separate.items()},
        "classes_found": {k: len(v) for k, v in results["heads"].items()},
    }
    # the selection frequencies resample numbers, not forwards: their share of the run without the two tests that
    # do run the model (the hold-out and the random circuits, reported on their own)
    share = separate["selection_stability"] / (wall - separate["template_holdout"] - separate["random_circuits"])
    say(
        f"ioi n={n} wall_s={wall:.1f} forward_s={anchor:.3f} prompt_forwards={report['prompt_forwards']} "
        f"wall_vs_forward={wall / anchor:.0f}x discovery_s={report['discovery_seconds']:.1f} "
        f"evaluation_s={evaluation:.1f} selection_stability_share={share:.4f} "
        f"template_holdout_s={separate['template_holdout']:.1f} random_circuits_s={separate['random_circuits']:.1f}"
    )
    report["selection_stability_share"] = share
    return report


def main(benchmark=run_benchmark, description: str = __doc__, default_n: int = 100) -> None:
    """The command line of an IOI benchmark (this one, and `scale.py`)."""
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--model", default="planted:ioi")
    parser.add_argument("--n", type=int, default=default_n)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    benchmark(args.model, n=args.n)


if __name__ == "__main__":
    main()
