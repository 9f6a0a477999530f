"""The task commands: `interp patch --task`, `interp path-patch`, `interp evaluate`, `interp task export`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from interp.cli import Parser, add_bootstrap, add_model, add_workers, load, print_grid, workers_for
from interp.edge_forward import INTERVENTIONS
from interp.errors import InterpError
from interp.task_metrics import METRICS


def add_task(parser, required: bool = True) -> None:
    parser.add_argument(
        "--task",
        required=required,
        metavar="FILE|ioi|greater-than|capitals",
        help="a task file (interp / auto-circuit JSON, JSONL, EAP-IG CSV) or a task interp builds",
    )
    parser.add_argument(
        "--metric", choices=METRICS, help="default: the task's own (greater-than: prob-diff), else logit-diff"
    )
    parser.add_argument(
        "--n",
        type=int,
        help="prompt pairs: how many to build (ioi: default 100; greater-than: 97) or the first N of a file",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of a built task and of the bootstrap")
    parser.add_argument(
        "--prepend-bos",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="BOS before every prompt (default: as the task says, else yes)",
    )


def add_intervention(
    parser, help: str = "what edges outside the circuit carry: the corrupted value (default), mean or zero"
) -> None:
    parser.add_argument("--intervention", default="patching", choices=INTERVENTIONS, help=help)


def add_output(parser, name: str) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", help=f"directory for {name}")
    parser.add_argument(
        "--max-memory",
        type=float,
        metavar="MIB",
        help="memory budget in MiB: chunked to fit, refused when even one chunk is over",
    )


def prepared_run(args):
    """(model, prepared task, bootstrap) from the common arguments; the task is read before the model loads where
    it is a file, so that a bad file fails fast."""
    from interp.task_runs import BUILTIN_TASKS, load_task, prepare

    if args.n is not None and args.n < 1:
        raise InterpError(f"--n must be at least 1, not {args.n}")
    early = None if args.task in BUILTIN_TASKS else load_task(args.task, None, args.n)
    model = load(args)
    task = early or load_task(args.task, model, args.n, args.seed)
    prepared = prepare(model, task, args.metric, args.prepend_bos)
    return model, prepared, prepared.bootstrap(getattr(args, "bootstrap", 0), args.seed)


def max_memory(args) -> int | None:
    return None if args.max_memory is None else int(args.max_memory * 2**20)


def finish(args, name: str, data: dict, model, prepared) -> dict:
    from interp.results import jsonable, provenance, write_json

    data = jsonable({**provenance(model, args.seed), **data, "data": prepared.data()})  # as the file keeps it
    if args.out:
        write_json(Path(args.out) / name, data)
    if args.json:
        print(json.dumps(data))
    return data


def cmd_patch_task(args) -> None:
    from interp.task_runs import patch_task

    model, prepared, bootstrap = prepared_run(args)
    with workers_for(args, model) as pool:
        data = patch_task(model, prepared, args.site, args.direction, max_memory(args), pool, bootstrap)
        data.update(pool.describe())
    data = finish(args, "patch.json", data, model, prepared)
    if not args.json:
        print(
            f"{args.model}: {args.direction} {data['site']} on {data['task']} ({data['n_prompts']} pairs); "
            f"{data['metric_name']}: clean {data['clean_metric']:.3f}, corrupt {data['corrupt_metric']:.3f}"
        )
        print_grid(data)


def cmd_path_patch(args) -> None:
    from interp.task_runs import path_patch_task

    model, prepared, bootstrap = prepared_run(args)
    with workers_for(args, model) as pool:
        data = path_patch_task(
            model, prepared, args.receivers, args.senders, args.intervention, max_memory(args), pool, bootstrap
        )
        data.update(pool.describe())
    data = finish(args, "path_patch.json", data, model, prepared)
    if not args.json:
        print(
            f"{args.model}: path patching into {', '.join(args.receivers)} on {data['task']} "
            f"({data['n_prompts']} pairs); {data['metric_name']}: clean {data['clean_metric']:.3f}, "
            f"corrupt {data['corrupt_metric']:.3f}"
        )
        for row in sorted(data["senders"], key=lambda row: -abs(row["effect"]))[: args.top]:
            interval = f" [{row['effect_ci'][0]:.3f}, {row['effect_ci'][1]:.3f}]" if "effect_ci" in row else ""
            print(f"{row['sender']:>8}: effect {row['effect']:+.3f}{interval}")


def cmd_evaluate(args) -> None:
    from interp.task_runs import evaluate_task, read_circuit

    model, prepared, bootstrap = prepared_run(args)
    circuit, kind = read_circuit(args.circuit, model)
    with workers_for(args, model) as pool:
        data = evaluate_task(model, prepared, circuit, args.intervention, max_memory(args), pool, bootstrap)
        data.update(pool.describe())
    data = finish(
        args, "evaluate.json", {"circuit_file": str(args.circuit), "circuit_kind": kind, **data}, model, prepared
    )
    if not args.json:
        interval = (
            f" [{data['faithfulness_ci'][0]:.3f}, {data['faithfulness_ci'][1]:.3f}]"
            if "faithfulness_ci" in data
            else ""
        )
        print(
            f"{args.model}: circuit of {data['n_edges']} edges on {data['task']} ({data['n_prompts']} pairs), "
            f"{data['intervention']}: faithfulness {data['faithfulness']:.3f}{interval} ({data['metric_name']}: "
            f"full {data['full_metric']:.3f}, empty {data['empty_circuit_metric']:.3f}, circuit "
            f"{data['circuit_metric']:.3f})"
        )


def cmd_task_export(args) -> None:
    from interp.task_runs import load_task

    model = load(args)
    task = load_task(args.task, model, args.n, args.seed)
    path = task.save(args.out)
    print(f"{len(task)} pairs of {task.name} written to {path}")


def add_commands(commands) -> None:
    path = commands.add_parser(
        "path-patch", help="path patching of a task: each sender's direct effect through the receivers"
    )
    add_task(path)
    path.add_argument(
        "--receivers",
        nargs="+",
        required=True,
        metavar="NODE",
        help="logits, m<layer>, a<layer>.h<head> (q, k and v) or a<layer>.h<head><q|k|v>",
    )
    path.add_argument(
        "--senders",
        nargs="+",
        metavar="NODE",
        help="input, a<layer>.h<head>, m<layer> (default: every node with an edge into a receiver)",
    )
    add_intervention(path, "what the sender sends: its output on the corrupted prompt (default), its mean, zero")
    path.add_argument("--top", type=int, default=10, help="senders printed (default 10)")
    add_model(path)
    add_bootstrap(path)
    add_workers(path)
    add_output(path, "path_patch.json")
    path.set_defaults(run=cmd_path_patch)

    evaluate = commands.add_parser(
        "evaluate", help="faithfulness of a circuit (EAP-IG / MIB file, or node list) on a task"
    )
    add_task(evaluate)
    evaluate.add_argument(
        "--circuit",
        required=True,
        help="an EAP-IG / MIB circuit JSON, or a node list (JSON list or text: a9.h1, m10, ...)",
    )
    add_intervention(evaluate)
    add_model(evaluate)
    add_bootstrap(evaluate)
    add_workers(evaluate)
    add_output(evaluate, "evaluate.json")
    evaluate.set_defaults(run=cmd_evaluate)

    task = commands.add_parser("task", help="tasks as files")
    task_commands = task.add_subparsers(dest="task_command", required=True, parser_class=Parser)
    export = task_commands.add_parser(
        "export", help="write a task interp builds (ioi, greater-than, capitals) as a task file"
    )
    export.add_argument("task", choices=["ioi", "greater-than", "capitals"])
    export.add_argument("--n", type=int, default=100)
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("--out", required=True, help="the task file to write (.json)")
    add_model(export)
    export.set_defaults(run=cmd_task_export)
