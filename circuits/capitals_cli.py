"""`interp capitals`: the experiment's arguments, its run from them, and the summary it prints."""

from __future__ import annotations

import argparse
from pathlib import Path

from interp.circuits.capitals import run
from interp.cli import add_bootstrap, add_model, add_prepend_bos, add_workers, load, workers_for
from interp.data.capitals import CUE_FREE_REPEATS, KNOWN_TASKS, N_COLORED_OBJECTS, TASK_NAMES
from interp.results import default_out_dir
from interp.stats import check_resamples


def ci(summary: dict, key: str, form: str) -> str:
    """` [low, high]` of `summary[key + "_ci"]` in the format `form`, or nothing without one."""
    interval = summary.get(f"{key}_ci")
    return "" if interval is None else f" [{interval[0]:{form}}, {interval[1]:{form}}]"


def summary(results: dict) -> str:
    switch = results["switch_test"]
    switched = (
        f"the argument is back on top in {switch['rate']:.0%}{ci(switch, 'rate', '.0%')} of {switch['n']} prompts"
        if switch["n"]
        else "no prompt where the answer leads after that block"
    )
    lines = [
        f"{results['model']}: the answer emerges at block {results['emergence_layer']}"
        f"{ci(results, 'emergence_layer', 'g')}; switch test: {switched}"
    ]
    if results.get("bootstrap"):
        lines.append(
            f"  [low, high]: 95% bootstrap intervals over prompts ({results['bootstrap']['n_resamples']} "
            "resamples within task)"
        )
    lines += [f"  {task} skipped: {reason}" for task, reason in results["skipped_tasks"].items()]
    for task, t in results["transplant"].items():
        lines.append(
            f"  o-vector {task} (block {t['layer']}): MRR {t['mrr_before']:.3f}{ci(t, 'mrr_before', '.3f')}"
            f" -> {t['mrr_after']:.3f}{ci(t, 'mrr_after', '.3f')} (rank {t['rank_before']:.1f} -> "
            f"{t['rank_after']:.1f}), no effect {t['no_effect_rate']:.0%}{ci(t, 'no_effect_rate', '.0%')}"
        )
    for method in ("zero", "mean"):
        lines.append(
            f"  {method} ablation, last k MLPs: "
            + ", ".join(
                f"k={k} {v['abstractive_accuracy']:.2f}/{v['extractive_accuracy']:.2f}"
                for k, v in results["ablation"][method].items()
            )
            + " (abstractive/extractive accuracy)"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model(parser)
    parser.add_argument("--out", default=None, help="output directory (default: results/capitals/<model>/)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prompt sample, demonstrations and filler")
    parser.add_argument(
        "--n-prompts",
        type=int,
        default=None,
        help=f"prompts per task (default: the whole table; {N_COLORED_OBJECTS} colored-object scenes)",
    )
    parser.add_argument(
        "--tasks",
        type=name_list,
        default=list(TASK_NAMES),
        metavar="TASK,TASK,...",
        help=f"tasks (default: {','.join(TASK_NAMES)}; known: {', '.join(KNOWN_TASKS)})",
    )
    parser.add_argument(
        "--capitals-table",
        choices=("world_capitals", "capitals"),
        default="world_capitals",
        help="the authors' 248 rows (default) or interp's 107 (the organism's)",
    )
    parser.add_argument(
        "--demonstration",
        choices=("paper", "random"),
        default="paper",
        help="paper (default): France -> Paris for every capital prompt, the paper's example for "
        "colored objects; random: drawn per prompt",
    )
    parser.add_argument(
        "--filler",
        choices=("random", "fixed"),
        default="random",
        help="cue-free filler words: three drawn per prompt (default) or 'table mug free'",
    )
    parser.add_argument(
        "--cue-free-repeats",
        type=int,
        default=CUE_FREE_REPEATS,
        help=f"filler + argument repeated so many times, then the filler ({CUE_FREE_REPEATS})",
    )
    parser.add_argument(
        "--ablation-ks",
        type=int_list,
        default=None,
        metavar="K,K,...",
        help="numbers of last MLPs to ablate (default: a spread from 0 to every block)",
    )
    parser.add_argument("--n-texts", type=int, default=200, help="text sample for the key-value memories (200)")
    parser.add_argument(
        "--transplant-positions",
        choices=("all", "last"),
        default="all",
        help="where the o-vector replaces the MLP outputs of the cue-free prompts (default: all)",
    )
    parser.add_argument(
        "--transplant-start",
        choices=("layer-1", "layer"),
        default="layer-1",
        help="first block it replaces, up to the last: the one before the o-vector's (default) or the o-vector's own",
    )
    parser.add_argument(
        "--o-vector",
        default=None,
        metavar="FILE.npy",
        help="the capitals o-vector from a .npy file (e.g. the authors' "
        "city_capital_o19_gpt2-medium.npy) instead of measuring it",
    )
    parser.add_argument(
        "--o-vector-layer",
        type=int,
        default=None,
        metavar="L",
        help="the block of the capitals o-vector (default: the capitals emergence layer)",
    )
    add_prepend_bos(parser, default=False)
    add_bootstrap(parser)
    add_workers(parser)
    parser.add_argument("--quiet", action="store_true")


def name_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",")]


def int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None


def run_args(args: argparse.Namespace) -> dict:
    check_resamples(args.bootstrap)  # before the model loads
    model = load(args)
    out_dir = Path(args.out) if args.out else default_out_dir("capitals", args.model)
    with workers_for(args, model) as pool:
        results = run(
            model,
            out_dir,
            seed=args.seed,
            quiet=args.quiet,
            n_prompts=args.n_prompts,
            ablation_ks=args.ablation_ks,
            n_texts=args.n_texts,
            prepend_bos=args.prepend_bos,
            workers=pool,
            bootstrap=args.bootstrap,
            tasks=args.tasks,
            capitals_table=args.capitals_table,
            demonstration=args.demonstration,
            filler=args.filler,
            cue_free_repeats=args.cue_free_repeats,
            transplant_positions="all" if args.transplant_positions == "all" else (-1,),
            transplant_start=args.transplant_start,
            o_vector=args.o_vector,
            o_vector_layer=args.o_vector_layer,
        )
    if not args.quiet:
        print(summary(results))
        print(f"wrote {out_dir}/results.json and figures")
    return results
