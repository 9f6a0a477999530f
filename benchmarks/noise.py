"""Noisy ground truth: the IOI discovery on planted:ioi as the heads outside its circuit get graded, real effects
on the task (`planted:ioi[:SEED]:noise=LEVEL`, README "Planted models").

    python benchmarks/noise.py [--model planted:ioi:7] [--n 24] [--levels 0,0.1,0.2] [--threads N]

Per noise level, on the same N prompts (the paper's p_IOI / p_ABC, `Protocol`): the mean logit difference and IO
over S; the largest |effect| of a head outside the planted circuit in every grid `circuits.ioi.discover` returns
(relative to the clean logit difference, as its THRESHOLD is: 5%; "-" where the step did not run); the planted
heads found, the other heads admitted (and how many as name movers); and per class recall / precision of the
found heads against the planted layout (`paper_comparison`). The last line is
`noise levels=<l,...> largest_outside=<x,...> planted_found=<k,...> others=<m,...> min_frequency=<f,...>`: the
lowest selection frequency of a planted head in its class over 1,000 bootstrap resamples of the prompts (within
template), per level.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from interp.circuits.ioi import Protocol, discover, ld, paper_comparison  # noqa: E402
from interp.circuits.ioi_selection import selection_stability  # noqa: E402
from interp.errors import InterpError  # noqa: E402
from interp.models import load_model  # noqa: E402
from interp.planted import ioi_layout, parse_planted  # noqa: E402
from interp.stats import DEFAULT_RESAMPLES, Bootstrap  # noqa: E402

LEVELS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
GRIDS = ("direct_effect", "into_name_mover_queries", "into_s_inhibition_values", "into_induction_keys",
         "backup_rise")


def measure_level(spec: str, n: int, seed: int, resamples: int = DEFAULT_RESAMPLES) -> dict:
    """Behaviour, the largest effect outside the circuit per grid, discovery against the planted layout, and each
    planted head's selection frequency in its class over `resamples` bootstrap resamples (within template)."""
    model = load_model(spec)
    layout = model.interp_source.circuit
    circuit = {head for members in layout.values() for head in members}
    clean, corrupt = Protocol().datasets(model, n, seed)
    diffs = ld(model, clean)
    discovered = discover(model, clean, corrupt, quiet=True)
    outside = torch.tensor([[(layer, head) not in circuit for head in range(model.cfg.n_heads)]
                            for layer in range(model.cfg.n_layers)])
    found = discovered["heads"]
    others = {name: [head for head in found[name] if head not in circuit] for name in layout}
    comparison = paper_comparison(found, layout)
    bootstrap = Bootstrap.over(clean.template_ids.tolist(), resamples, seed)
    frequency = selection_stability(discovered["evidence"], bootstrap, found)["frequency"]
    return {
        "model": spec, "mean_logit_diff": diffs.mean().item(), "io_over_s": (diffs > 0).float().mean().item(),
        "largest_outside": {name: discovered["grids"][name][outside].abs().max().item()
                            if name in discovered["grids"] else None for name in GRIDS},
        "planted_heads": len(circuit),
        "planted_found": sum(len(set(found[name]) & set(layout[name])) for name in layout),
        "others_admitted": {name: [list(head) for head in heads] for name, heads in others.items()},
        "comparison": {name: {"recall": c["recall"], "precision": c["precision"]} for name, c in comparison.items()},
        "planted_selection_frequency": {name: {f"{l}.{h}": frequency[name][l][h] for l, h in heads}
                                        for name, heads in layout.items()},
        "lowest_planted_frequency": min((frequency[name][l][h] for name, heads in layout.items() for l, h in heads),
                                        default=None),
    }


def print_table(report: dict, say) -> None:
    say(f"{'level':>5} {'logit diff':>10} {'IO>S':>5} " + " ".join(f"{name[:13]:>13}" for name in GRIDS)
        + f" {'planted':>8} {'others (NM)':>11} {'min freq':>8}")
    for level in report["levels"]:
        largest = " ".join("            -" if value is None else f"{100 * value:12.1f}%"
                           for value in level["largest_outside"].values())
        others = level["others_admitted"]
        say(f"{level['noise']:5.2f} {level['mean_logit_diff']:10.2f} {level['io_over_s']:5.2f} {largest} "
            f"{level['planted_found']:>4}/{level['planted_heads']:<3} "
            f"{sum(map(len, others.values())):>6} ({len(others['name_mover'])}) "
            f"{level['lowest_planted_frequency']:8.2f}")
    say("recall / precision per class:")
    say(f"{'level':>5} " + " ".join(f"{name[:16]:>16}" for name in ioi_layout()))
    number = lambda value: "-" if value is None else f"{value:.2f}"  # noqa: E731
    for level in report["levels"]:
        say(f"{level['noise']:5.2f} " + " ".join(f"{number(c['recall']) + ' / ' + number(c['precision']):>16}"
                                                  for c in level["comparison"].values()))


def run_benchmark(model_spec: str | None = None, quiet: bool = False, levels=LEVELS, n: int = 24,
                  seed: int = 0) -> dict:
    """Measure every level on `model_spec` (planted:ioi or planted:ioi:SEED; the level is added to it); print the
    tables and the summary line unless quiet; return every number."""
    model_spec = model_spec or "planted:ioi"
    if not model_spec.startswith("planted:ioi") or parse_planted(model_spec)[2] or "noise=" in model_spec:
        raise InterpError(f"the noise benchmark sweeps the noise level of planted:ioi or planted:ioi:SEED, "
                          f"not {model_spec!r}")
    say = (lambda *args: None) if quiet else (lambda *args: print(*args, flush=True))
    say(f"{model_spec}: {n} prompts, seed {seed}; {torch.get_num_threads()} threads; largest |effect| of a head "
        "outside the planted circuit per discovery grid, relative to the clean logit difference (threshold 5%)")
    report = {"model": model_spec, "n": n, "seed": seed, "threads": torch.get_num_threads(), "levels": []}
    for level in levels:
        report["levels"].append({"noise": level, **measure_level(f"{model_spec}:noise={level:g}", n, seed)})
    print_table(report, say)
    largest = [max((v for v in level["largest_outside"].values() if v is not None), default=0.0)
               for level in report["levels"]]
    lowest = [level["lowest_planted_frequency"] for level in report["levels"]]
    say(f"noise levels={','.join(f'{level:g}' for level in levels)} "
        f"largest_outside={','.join(f'{value:.3f}' for value in largest)} "
        f"planted_found={','.join(str(level['planted_found']) for level in report['levels'])} "
        f"others={','.join(str(sum(map(len, level['others_admitted'].values()))) for level in report['levels'])} "
        f"min_frequency={','.join(f'{frequency:.2f}' for frequency in lowest)}")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="planted:ioi")
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--levels", default=",".join(f"{level:g}" for level in LEVELS))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run_benchmark(args.model, levels=[float(level) for level in args.levels.split(",")], n=args.n)


if __name__ == "__main__":
    main()
