"""`interp ioi`: the experiment's arguments, its run from them, and what it prints."""

from __future__ import annotations

import argparse

from interp.circuits.ioi import NAME_LISTS, Protocol, run
from interp.circuits.ioi_selection import RULES
from interp.cli import add_bootstrap, add_model, add_prepend_bos, add_workers, load, workers_for
from interp.errors import InterpError
from interp.results import default_out_dir
from interp.stats import check_resamples, with_interval


def add_arguments(parser) -> None:
    add_model(parser)
    parser.add_argument("--n", type=int, default=100, help="prompts (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="output directory (default results/ioi/<model>/)")
    parser.add_argument(
        "--names",
        choices=sorted(NAME_LISTS),
        default="paper",
        help="the paper's 99 names (default) or the 109 the organism was trained on",
    )
    parser.add_argument("--order", choices=["mixed", "BABA", "ABBA"], default="mixed")
    parser.add_argument(
        "--n-templates",
        type=int,
        default=None,
        help="the paper's nb_templates: mixed takes half of them from each order (default 15)",
    )
    parser.add_argument(
        "--corruption",
        choices=["paper", "distinct"],
        default="paper",
        help="p_ABC names as the paper's code draws them (default), or three distinct new names",
    )
    parser.add_argument("--random-knockouts", type=int, default=10, help="completeness: random subsets (10)")
    parser.add_argument("--greedy-steps", type=int, default=5, help="completeness: greedy knock-out size (5)")
    parser.add_argument(
        "--greedy-candidates", type=int, default=5, help="completeness: nodes drawn and tried at each greedy step (5)"
    )
    add_bootstrap(parser)
    parser.add_argument(
        "--random-circuits",
        type=int,
        default=100,
        metavar="N",
        help="random circuits of the found circuit's size for its faithfulness' p-value (100; 0: off)",
    )
    parser.add_argument(
        "--template-holdout",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="find the classes on half of the templates, evaluate on the other half (default: yes)",
    )
    parser.add_argument(
        "--class-rule",
        choices=RULES,
        default="threshold",
        help="threshold: a head joins a class when its path-patching effect passes 5%% of the "
        "logit difference (default, the paper's discovery); mechanism: and the class's mechanism "
        "checks out too (copy scores, where it attends)",
    )
    add_prepend_bos(parser, default=False)
    add_workers(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run_from_args(args) -> None:
    if args.random_circuits < 0:
        raise InterpError(f"--random-circuits takes a number >= 0 (0 turns the test off), not {args.random_circuits}")
    protocol = Protocol(
        names=args.names,
        order=args.order,
        n_templates=args.n_templates,
        corruption=args.corruption,
        prepend_bos=args.prepend_bos,
        random_knockouts=args.random_knockouts,
        greedy_steps=args.greedy_steps,
        greedy_candidates=args.greedy_candidates,
        bootstrap=check_resamples(args.bootstrap),
        random_circuits=args.random_circuits,
        template_holdout=args.template_holdout,
        class_rule=args.class_rule,
    )
    model = load(args)
    with workers_for(args, model) as pool:
        results = run(
            model, args.out or default_out_dir("ioi", args.model), args.n, args.seed, args.quiet, protocol, pool
        )
    print(
        ", ".join(
            f"{label} {results[key]:.3f}{with_interval(results.get(key + '_ci'))}"
            for label, key in (("mean logit diff", "mean_logit_diff"), ("IO over S", "io_over_s"))
        )
        + ", faithfulness "
        f"{results['faithfulness']:.3f}{with_interval(results['evaluation'].get('faithfulness_ci'))}"
    )
    stable = results.get("selection", {}).get("found", {})
    for name, members in results["heads"].items():
        print(
            f"{name:>20}: "
            + (
                " ".join(f"{l}.{h}" + (f" ({stable[name][f'{l}.{h}']:.2f})" if stable else "") for l, h in members)
                or "-"
            )
        )
    if stable:
        print("(selection frequency over the bootstrap resamples in brackets)")
    if "random_circuits" in results:
        test = results["random_circuits"]
        print(
            f"against {test['n']} random circuits of {test['size']} nodes: percentile {test['percentile']:.0f}, "
            f"p = {test['p_value']:.3f}"
        )
