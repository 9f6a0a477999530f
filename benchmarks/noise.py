"""Noisy ground truth: the IOI discovery on planted:ioi as the heads outside its circuit get graded, real effects
on the task (`planted:ioi[:SEED]:noise=LEVEL`, README "Planted models").

    python benchmarks/noise.py [--model planted:ioi:7] [--n 24] [--levels 0,0.1,0.2] [--rules mechanism] [--threads N]

Per noise level, on the same N prompts (the paper's p_IOI / p_ABC, `Protocol`): the mean logit difference and IO
over S; the largest |effect| of a head outside the planted circuit in every grid `circuits.ioi.discover` returns
(relative to the clean logit difference, as its THRESHOLD is: 5%; "-" where the step did not run); the planted
heads found, the other heads admitted (and how many as name movers); and per class recall / precision of the
found heads against the planted layout (`paper_comparison`); each under both class rules (`--class-rule` of
`interp ioi`: threshold, mechanism). The last lines, one per rule, are
`noise rule=<rule> levels=<l,...> largest_outside=<x,...> planted_found=<k,...> others=<m,...>
min_frequency=<f,...> targets_met=<yes|no|-,...>`: min_frequency is the lowest selection frequency of a planted
head in its class over 1,000 bootstrap resamples of the prompts (within template); targets_met says per level
whether issue 25's target for it is met (`targets`; "-": the model no longer does the task).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from interp.circuits.ioi import Protocol, discover, ld, paper_comparison  # noqa: E402
from interp.circuits.ioi_selection import RULES, THRESHOLD, selection_stability  # noqa: E402
from interp.errors import InterpError  # noqa: E402
from interp.models import load_model  # noqa: E402
from interp.planted import ioi_layout, parse_planted  # noqa: E402
from interp.stats import DEFAULT_RESAMPLES, Bootstrap  # noqa: E402

LEVELS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
GRIDS = ("direct_effect", "into_name_mover_queries", "into_s_inhibition_values", "into_induction_keys", "backup_rise")


def measure_level(spec: str, n: int, seed: int, rule: str, resamples: int = DEFAULT_RESAMPLES) -> dict:
    """Behaviour, the largest effect outside the circuit per grid, discovery against the planted layout, and each
    planted head's selection frequency in its class over `resamples` bootstrap resamples (within template), all
    under the class rule `rule`."""
    model = load_model(spec)
    layout = model.interp_source.circuit
    circuit = {head for members in layout.values() for head in members}
    clean, corrupt = Protocol().datasets(model, n, seed)
    diffs = ld(model, clean)
    discovered = discover(model, clean, corrupt, quiet=True, rule=rule)
    outside = torch.tensor(
        [[(layer, head) not in circuit for head in range(model.cfg.n_heads)] for layer in range(model.cfg.n_layers)]
    )
    found = discovered["heads"]
    others = {name: [head for head in found[name] if head not in circuit] for name in layout}
    comparison = paper_comparison(found, layout)
    bootstrap = Bootstrap.over(clean.template_ids.tolist(), resamples, seed)
    frequency = selection_stability(discovered["evidence"], bootstrap, found)["frequency"]
    return {
        "model": spec,
        "mean_logit_diff": diffs.mean().item(),
        "io_over_s": (diffs > 0).float().mean().item(),
        "largest_outside": {
            name: discovered["grids"][name][outside].abs().max().item() if name in discovered["grids"] else None
            for name in GRIDS
        },
        "planted_heads": len(circuit),
        "planted_found": sum(len(set(found[name]) & set(layout[name])) for name in layout),
        "others_admitted": {name: [list(head) for head in heads] for name, heads in others.items()},
        "comparison": {name: {"recall": c["recall"], "precision": c["precision"]} for name, c in comparison.items()},
        "planted_selection_frequency": {
            name: {f"{l}.{h}": frequency[name][l][h] for l, h in heads} for name, heads in layout.items()
        },
        "lowest_planted_frequency": min(
            (frequency[name][l][h] for name, heads in layout.items() for l, h in heads), default=None
        ),
    }


def targets(levels: list[dict]) -> dict:
    """Issue 25's targets on one rule's sweep: up to the level at which the largest effect outside the circuit
    reaches half the threshold, every planted head found in its class with selection frequency >= 0.95; beyond
    it, wherever the model still does the task (IO over S >= 0.7), recall >= 0.9 and precision >= 0.8 in every
    class. Per level: which target applies and whether it is met."""
    out = {}
    for level in levels:
        largest = max(v for v in level["largest_outside"].values() if v is not None)
        if largest < THRESHOLD / 2:
            met = level["planted_found"] == level["planted_heads"] and level["lowest_planted_frequency"] >= 0.95
            out[f"{level['noise']:g}"] = {"target": "all planted heads, frequency >= 0.95", "met": met}
        elif level["io_over_s"] >= 0.7:
            met = all(
                (c["recall"] is None or c["recall"] >= 0.9) and (c["precision"] is None or c["precision"] >= 0.8)
                for c in level["comparison"].values()
            )
            out[f"{level['noise']:g}"] = {"target": "recall >= 0.9, precision >= 0.8 per class", "met": met}
        else:
            out[f"{level['noise']:g}"] = {"target": "none: the model no longer does the task", "met": None}
    return out


def print_table(levels: list[dict], say) -> None:
    say(
        f"{'level':>5} {'logit diff':>10} {'IO>S':>5} "
        + " ".join(f"{name[:13]:>13}" for name in GRIDS)
        + f" {'planted':>8} {'others (NM)':>11} {'min freq':>8}"
    )
    for level in levels:
        largest = " ".join(
            "            -" if value is None else f"{100 * value:12.1f}%" for value in level["largest_outside"].values()
        )
        others = level["others_admitted"]
        say(
            f"{level['noise']:5.2f} {level['mean_logit_diff']:10.2f} {level['io_over_s']:5.2f} {largest} "
            f"{level['planted_found']:>4}/{level['planted_heads']:<3} "
            f"{sum(map(len, others.values())):>6} ({len(others['name_mover'])}) "
            f"{level['lowest_planted_frequency']:8.2f}"
        )
    say("recall / precision per class:")
    say(f"{'level':>5} " + " ".join(f"{name[:16]:>16}" for name in ioi_layout()))
    number = lambda value: "-" if value is None else f"{value:.2f}"  # noqa: E731
    for level in levels:
        say(
            f"{level['noise']:5.2f} "
            + " ".join(
                f"{number(c['recall']) + ' / ' + number(c['precision']):>16}" for c in level["comparison"].values()
            )
        )


def run_benchmark(
    model_spec: str | None = None, quiet: bool = False, levels=LEVELS, n: int = 24, seed: int = 0, rules=RULES
) -> dict:
    """Measure every level on `model_spec` (planted:ioi or planted:ioi:SEED; the level is added to it) under each
    class rule; print the tables and a summary line per rule unless quiet; return every number."""
    model_spec = model_spec or "planted:ioi"
    if not model_spec.startswith("planted:ioi") or parse_planted(model_spec)[2] or "noise=" in model_spec:
        raise InterpError(
            f"the noise benchmark sweeps the noise level of planted:ioi or planted:ioi:SEED, not {model_spec!r}"
        )
    say = (lambda *args: None) if quiet else (lambda *args: print(*args, flush=True))
    say(
        f"{model_spec}: {n} prompts, seed {seed}; {torch.get_num_threads()} threads; largest |effect| of a head "
        "outside the planted circuit per discovery grid, relative to the clean logit difference (threshold 5%)"
    )
    report = {"model": model_spec, "n": n, "seed": seed, "threads": torch.get_num_threads(), "rules": {}}
    for rule in rules:
        swept = [{"noise": level, **measure_level(f"{model_spec}:noise={level:g}", n, seed, rule)} for level in levels]
        report["rules"][rule] = {"levels": swept, "targets": targets(swept)}
        say(f"class rule: {rule}")
        print_table(swept, say)
    for rule, sweep in report["rules"].items():
        swept = sweep["levels"]
        largest = [max(v for v in level["largest_outside"].values() if v is not None) for level in swept]
        lowest = [level["lowest_planted_frequency"] for level in swept]
        met = ",".join("-" if t["met"] is None else "yes" if t["met"] else "no" for t in sweep["targets"].values())
        say(
            f"noise rule={rule} levels={','.join(f'{level:g}' for level in levels)} "
            f"largest_outside={','.join(f'{value:.3f}' for value in largest)} "
            f"planted_found={','.join(str(level['planted_found']) for level in swept)} "
            f"others={','.join(str(sum(map(len, level['others_admitted'].values()))) for level in swept)} "
            f"min_frequency={','.join(f'{frequency:.2f}' for frequency in lowest)} "
            f"targets_met={met}"
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="planted:ioi")
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--levels", default=",".join(f"{level:g}" for level in LEVELS))
    parser.add_argument("--rules", default=",".join(RULES), help="class rules to sweep (default: both)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run_benchmark(
        args.model, levels=[float(level) for level in args.levels.split(",")], n=args.n, rules=args.rules.split(",")
    )


if __name__ == "__main__":
    main()
