"""The `interp` command. Every user mistake becomes one line on stderr and a non-zero exit, no traceback."""

from __future__ import annotations

import argparse
import json
import sys

from interp.errors import InterpError


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + message; one line is the contract
        raise InterpError(f"{self.prog}: {message}")


def add_model(parser, default: str = "organism") -> None:
    parser.add_argument(
        "--model",
        default=default,
        help=f"model spec (default: {default}): gpt2, gpt2-medium, "
        "gpt2-large, gpt2-xl, random:<size>, organism, or a checkpoint directory",
    )
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--dtype", default=None, help="float32 (default), bfloat16 or float16")
    parser.add_argument(
        "--device-map",
        default=None,
        choices=["auto", "balanced"],
        help="spread the model's blocks over every GPU (accelerate's placement: auto fills them in "
        "order, balanced evens them out) instead of --device",
    )


def add_prepend_bos(parser, default: bool = True) -> None:
    parser.add_argument(
        "--prepend-bos",
        action=argparse.BooleanOptionalAction,
        default=default,
        help="put GPT-2's BOS token (<|endoftext|>) before every prompt (default: "
        f"{'yes' if default else 'no'}; recorded in the results)",
    )


def add_bootstrap(parser) -> None:
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        metavar="N",
        help="bootstrap resamples of the prompts (within template or task) for every mean's 95%% "
        "interval and every found component's selection frequency (default 1000; 0: off)",
    )


def add_workers(parser) -> None:
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="share the sweeps out to N Ray workers, each with its own copy of the model (a local "
        "cluster of N processes, or N workers of the cluster at --ray-address); needs "
        "interp[ray]",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDRESS",
        help="join the running Ray cluster there (e.g. auto, or ray://host:10001): one worker per "
        "GPU unless --workers says otherwise",
    )


def load(args):
    from interp.models import load_model

    if args.device_map is not None and (getattr(args, "workers", None) or getattr(args, "ray_address", None)):
        raise InterpError(
            "--device-map and Ray workers exclude each other: each worker holds the whole model on its own device"
        )
    return load_model(args.model, device=args.device, dtype=args.dtype, device_map=args.device_map)


def workers_for(args, model):
    """Where the command's sweeps run: this process, or Ray workers (--workers, --ray-address). A context manager."""
    from interp.workers import ModelRecipe, RayWorkers, Workers

    if getattr(args, "workers", None) is None and getattr(args, "ray_address", None) is None:
        return Workers(model)
    recipe = ModelRecipe(args.model, args.device, str(model.cfg.dtype).removeprefix("torch."))
    return RayWorkers(recipe, args.workers, args.ray_address, quiet=getattr(args, "quiet", False))


def cmd_lens(args) -> None:
    from interp.lens import lens_json, logit_lens

    model = load(args)
    result = logit_lens(model, args.prompt, targets=args.target, top_k=args.top_k, prepend_bos=args.prepend_bos)
    data = lens_json(model, result, args.model)
    if args.out:
        from interp.plotting import plot_lens, save_figure
        from interp.results import write_json

        write_json(f"{args.out}/lens.json", data)
        save_figure(plot_lens(data), args.out, "lens")
    if args.json:
        print(json.dumps(data))
        return
    print(f"{args.model}: {''.join(result.str_tokens)!r}")
    for layer in data["layers"]:
        tops = "  ".join(f"{t['token']!r} {t['prob']:.3f}" for t in layer["top_tokens"])
        targets = "".join(f"  [{t!r}: p={v['prob']:.3f} rank={v['rank']}]" for t, v in layer.get("targets", {}).items())
        print(f"{layer['name']:>9}: {tops}{targets}")


def cmd_organism_eval(args) -> None:
    from interp.organism.evaluate import evaluate_logits_fn

    model = load(args)
    metrics = evaluate_logits_fn(lambda tokens: model(tokens)[:, -1])
    if args.json:
        print(json.dumps(metrics))
    else:
        for key, value in metrics.items():
            print(f"{key:>34}: {value}")


def cmd_organism_train(args) -> None:
    from interp.organism.train import TrainConfig, train

    overrides = {k: getattr(args, k) for k in ("steps", "seed", "threads") if getattr(args, k) is not None}
    info = train(args.out, TrainConfig(**overrides), quiet=args.quiet)
    print(json.dumps({"out": args.out, "selected_step": info["selected_step"], **info["evaluation"]}))


def cmd_plot(args) -> None:
    """Regenerate every figure of a run from its results file alone."""
    from pathlib import Path

    from interp import plotting
    from interp.results import read_json

    data = read_json(args.results)
    out = args.out or str(Path(args.results).parent)
    if "top1_grid" in data:
        paths = plotting.save_figure(plotting.plot_lens(data), out, "lens")
    elif "heads" in data and "grids" in data:
        from interp.plotting_ioi import ioi_figures

        paths = ioi_figures(data, out)
    elif "curve" in data and "edge_names" in data:
        paths = plotting.discovery_figures(data, out)
    elif "one_liners" in data:
        from interp.circuits.article import figures_from_results

        paths = figures_from_results(data, out)
    elif "probability_map" in data:
        from interp.circuits.greater_than import figures_from_results

        paths = figures_from_results(data, out)
    elif "vector" in data or ("nodes" in data and "agreement" in data):
        from interp.circuits.features import figures_from_results

        paths = figures_from_results(data, out)
    elif "emergence_layer" in data:
        from interp.circuits.capitals import figures_from_results

        paths = figures_from_results(data, out)
    else:
        raise InterpError(
            f"{args.results} is not a results file of interp lens, ioi, capitals, discover, greater-than, article or "
            "dictionaries attribute / vector"
        )
    for path in paths:
        print(path)


def cmd_patch(args) -> None:
    from interp.patching import patch_grid_for_cli

    if args.task is not None:
        from interp.task_cli import cmd_patch_task

        return cmd_patch_task(args)
    missing = [f"--{name}" for name in ("clean", "corrupt", "answer", "wrong") if getattr(args, name) is None]
    if missing:
        raise InterpError(f"patch: give --task FILE, or one pair: {', '.join(missing)} missing")
    model = load(args)
    max_memory = None if args.max_memory is None else int(args.max_memory * 2**20)
    with workers_for(args, model) as pool:
        data = {
            "model": args.model,
            **patch_grid_for_cli(
                model,
                args.clean,
                args.corrupt,
                args.answer,
                args.wrong,
                args.site,
                args.direction,
                max_memory,
                True if args.prepend_bos is None else args.prepend_bos,
                pool,
            ),
            **pool.describe(),
        }
    if args.out:
        from interp.results import write_json

        write_json(f"{args.out}/patch.json", data)
    if args.json:
        print(json.dumps(data))
        return
    print(
        f"{args.model}: {args.direction} {data['site']}; {data['metric']}: clean {data['clean_metric']:.3f}, "
        f"corrupt {data['corrupt_metric']:.3f}"
    )
    print_grid(data)


def print_grid(data: dict) -> None:
    """A patching grid as a table: rows (layers) by columns (positions or heads)."""
    print(f"{data['row_axis']:>6} " + " ".join(f"{label[:9]:>9}" for label in data["column_labels"]))
    for label, row in zip(data["row_labels"], data["grid"]):
        print(f"{label:>6} " + " ".join(f"{value:9.3f}" for value in row))


def cmd_bench(args) -> None:
    """Benchmarks live beside the package in a source checkout (benchmarks/<name>.py), not in the wheel."""
    import importlib.util
    import inspect
    from pathlib import Path

    import torch

    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{args.name}.py"
    if not path.is_file():
        raise InterpError(f"benchmark {args.name!r} is not at {path}: benchmarks ship with the source checkout")
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = importlib.util.spec_from_file_location(f"interp_benchmark_{args.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if args.model and "model_spec" not in inspect.signature(module.run_benchmark).parameters:
        raise InterpError(f"benchmark {args.name!r} takes no --model: it measures every GPT-2 size")
    report = module.run_benchmark(**({"model_spec": args.model} if args.model else {}), quiet=args.json)
    if args.json:
        print(json.dumps(report))


def build_parser() -> Parser:
    parser = Parser(prog="interp", description="Mechanistic interpretability of GPT-2.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    lens = commands.add_parser("lens", help="logit lens of a prompt")
    lens.add_argument("prompt")
    add_model(lens)
    lens.add_argument("--target", action="append", default=[], help="a token to follow (one token, e.g. ' Warsaw')")
    lens.add_argument("--top-k", type=int, default=5)
    add_prepend_bos(lens)
    lens.add_argument("--json", action="store_true", help="print one JSON object")
    lens.add_argument("--out", help="directory for lens.json and the figure")
    lens.set_defaults(run=cmd_lens)

    from interp.circuits import article, capitals_cli, check, discover, greater_than, ioi_cli

    ioi_parser = commands.add_parser("ioi", help="reproduce the IOI circuit (Wang et al.)")
    ioi_cli.add_arguments(ioi_parser)
    ioi_parser.set_defaults(run=ioi_cli.run_from_args)

    capitals_parser = commands.add_parser("capitals", help="reproduce the capital-city FFN vector (Merullo et al.)")
    capitals_cli.add_arguments(capitals_parser)
    capitals_parser.set_defaults(run=capitals_cli.run_args)

    greater_than_parser = commands.add_parser(
        "greater-than", help="reproduce the greater-than circuit (Hanna et al.): path patching, heat map, circuits"
    )
    greater_than.add_arguments(greater_than_parser)
    greater_than_parser.set_defaults(run=greater_than.run_from_args)

    check_parser = commands.add_parser(
        "check",
        help="acceptance test of real GPT-2 weights: TransformerLens's "
        "recorded loss, the IOI paper's numbers, the capitals paper's logit lens",
    )
    check.add_arguments(check_parser)
    check_parser.set_defaults(run=check.run_from_args)

    article_parser = commands.add_parser(
        "article",
        help="the explainer's claims about GPT-2, measured (word vectors, "
        "context, heads, memories, facts, IOI's limit, one-liners)",
    )
    article.add_arguments(article_parser)
    article_parser.set_defaults(run=article.run_from_args)

    discover_parser = commands.add_parser(
        "discover", help="edge-level circuit discovery (EAP, EAP-IG, exact) with MIB's faithfulness curve"
    )
    discover.add_arguments(discover_parser)
    discover_parser.set_defaults(run=discover.run_from_args)

    from interp.patching import CLI_SITES, DIRECTIONS
    from interp.task_cli import add_commands as add_task_commands
    from interp.task_cli import add_output, add_task

    patch = commands.add_parser(
        "patch",
        help="activation patching: logit(answer) - logit(wrong) per layer x "
        "position (residual sites) or layer x head (head_out)",
    )
    add_task(patch, required=False)
    patch.add_argument("--clean", help="one pair instead of a task: the clean prompt")
    patch.add_argument("--corrupt", help="the corrupted prompt (same number of tokens)")
    patch.add_argument("--answer", help="the clean answer token, e.g. ' Mary'")
    patch.add_argument("--wrong", help="the token it is compared with, e.g. ' John'")
    patch.add_argument("--site", default="resid_pre", choices=CLI_SITES)
    patch.add_argument(
        "--direction",
        default="denoise",
        choices=DIRECTIONS,
        help="denoise: clean activations into the corrupted run (default); noise: the reverse",
    )
    add_model(patch)
    add_bootstrap(patch)
    add_workers(patch)
    add_output(patch, "patch.json")
    patch.set_defaults(run=cmd_patch)
    add_task_commands(commands)

    from interp.dictionaries.cli import add_commands as add_dictionary_commands

    add_dictionary_commands(commands)

    bench = commands.add_parser(
        "bench", help="benchmarks (source checkout): patching and edge attribution vs TransformerLens, IOI's cost"
    )
    bench.add_argument(
        "name",
        choices=["patching", "ioi", "discovery", "load", "scale", "noise", "dictionaries"],
        help="patching: interp vs TransformerLens; ioi: the whole IOI pipeline's cost; discovery: "
        "EAP vs TransformerLens's edge attribution, EAP-IG, exact edge patching; load: loading time "
        "and peak memory over the weights' bytes, per size; scale: IOI in one process vs on 1 and 2 "
        "Ray workers; noise: IOI discovery on planted:ioi as the heads outside its circuit get noisier; "
        "dictionaries: feature vs node attribution, training throughput, peak memory",
    )
    bench.add_argument(
        "--model",
        default=None,
        help="model spec (default: random:gpt2 for patching, planted:ioi for ioi, discovery, scale and noise, "
        "organism for dictionaries)",
    )
    bench.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    bench.add_argument("--json", action="store_true", help="print the full report as one JSON object")
    bench.set_defaults(run=cmd_bench)

    plot = commands.add_parser("plot", help="regenerate a run's figures from its results.json")
    plot.add_argument("results", help="a results.json (or lens.json) written by interp")
    plot.add_argument("--out", help="directory for the figures (default: beside the results file)")
    plot.set_defaults(run=cmd_plot)

    organism = commands.add_parser("organism", help="the bundled model organism")
    organism_commands = organism.add_subparsers(dest="organism_command", required=True, parser_class=Parser)
    evaluate = organism_commands.add_parser("eval", help="behavioural evaluation on held-out material")
    add_model(evaluate)
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(run=cmd_organism_eval)
    train = organism_commands.add_parser("train", help="retrain the organism from scratch")
    train.add_argument("--out", default="results/organism/checkpoint")
    for option, meaning in (("steps", "training steps"), ("seed", "seed"), ("threads", "torch threads")):
        train.add_argument(f"--{option}", type=int, help=f"{meaning} (default: the shipped run's)")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(run=cmd_organism_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.run(args)
    except InterpError as error:
        print(f"interp: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interp: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
