"""Edge-level circuit discovery on a task, evaluated as MIB's circuit track evaluates it.

    python circuits/discover.py --model planted:ioi --method eap-ig      (or: interp discover ...)

Method. The task gives clean/corrupted pairs and a metric: for IOI, the paper's p_IOI prompts and their p_ABC
twins (`interp.circuits.ioi.Protocol`), and the logit difference IO - S at END. Every edge of the model's graph
(`interp.graph`: input, heads through their q/k/v inputs, MLPs, logits) is scored by EAP, EAP-IG (5 steps on the
inputs, MIB's setting) or exact edge patching (`interp.edge_scores`): the change of the metric when that edge
alone carries its corrupted value on the clean prompts. The circuit of the top edges by |score| is pruned to the
paths from input to logits and run with every other edge corrupted; faithfulness is (circuit - empty) / (full -
empty), measured at MIB's edge budgets (0.1% .. 100%) for the faithfulness curve and its CPR and CMD
(`interp.discovery`). The circuit reported is the `--top-n` edges, or by default the smallest of MIB's budgets
whose faithfulness reaches 0.9. Where the model's true circuit is known (a planted model) the edge and node
scores' ROC AUC against it are reported; the circuit's heads are compared with the classes of the IOI paper
(GPT-2 small), of a planted model, or of an `interp ioi` results file (`--ioi-results`).

How sure each number is (`circuits/discover_sureness.py`, as `interp ioi` measures it): every score and metric is
kept per prompt; bootstrap intervals over prompts resampled within template, each circuit edge's selection
frequency over the resamples, a template hold-out, and the circuit against random circuits.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from interp.circuits.discover_sureness import metric_intervals, random_circuits, selection_stability, template_holdout
from interp.circuits.ioi import NAME_LISTS, Protocol, timed
from interp.cli import add_bootstrap, add_model, add_workers, load, workers_for
from interp.data.ioi import PAPER_HEADS, dataset_json, ioi_task
from interp.discovery import Discovery, circuit_values, discover, reference_aucs
from interp.edge_scores import METHODS
from interp.errors import InterpError
from interp.results import default_out_dir, provenance, read_json, write_array, write_json
from interp.stats import Bootstrap, check_resamples, overlap, rounded, with_interval
from interp.task_cli import add_intervention
from interp.task_metrics import METRICS
from interp.task_runs import load_task, prepare
from interp.workers import Workers

CIRCUIT_FAITHFULNESS = 0.9  # the default circuit: the smallest MIB budget whose faithfulness reaches this
PER_PROMPT_SCORES = "edge_scores_per_prompt.npy"  # [n_edges, n_prompts] float32, edges in `edge_names` order


def head_classes(model, ioi_results: str | None) -> tuple[str, dict] | None:
    """(where from, {class: [(layer, head)]}) the circuit's heads are compared with, if any."""
    if ioi_results is not None:
        data = read_json(ioi_results)
        if "heads" not in data:
            raise InterpError(f"{ioi_results} is not a results file of interp ioi (it has no 'heads')")
        return f"interp ioi path patching ({ioi_results})", data["heads"]
    if model.interp_source.circuit is not None:
        return "planted circuit", model.interp_source.circuit
    if model.interp_source.spec == "gpt2":
        return "IOI paper (Wang et al. 2023)", PAPER_HEADS
    return None


def head_overlap(found: list[tuple[int, int]], classes: dict[str, list]) -> dict:
    """How the circuit's heads meet the classes: per class, the class's heads found; overall precision (of the
    circuit's heads, those in some class) and recall (of the classes' heads, those in the circuit)."""
    found = {tuple(head) for head in found}
    known = {tuple(head) for heads in classes.values() for head in heads}
    return {
        "per_class": {
            name: {"found": sorted(found & {tuple(h) for h in heads}), "of": len(heads)}
            for name, heads in classes.items()
        },
        "precision": len(found & known) / len(found) if found else None,
        "recall": len(found & known) / len(known) if known else None,
        "circuit_heads_in_no_class": sorted(found - known),
    }


def run(
    model,
    out_dir: str | Path,
    task: str = "ioi",
    method: str = "eap-ig",
    n: int | None = None,
    seed: int = 0,
    top_n: int | None = None,
    intervention: str = "patching",
    steps: int = 5,
    selection: str = "topn",
    max_memory: int | None = None,
    ioi_results: str | None = None,
    quiet: bool = False,
    protocol: Protocol = Protocol(),
    workers: Workers | None = None,
    metric_name: str | None = None,
) -> dict:
    """Score every edge, draw the faithfulness curve, pick the circuit, compare it with what is known, measure how
    sure each finding is (`sureness`); write results.json (with the dataset, every edge's score and every
    per-prompt metric), the per-prompt edge scores (PER_PROMPT_SCORES), circuit.json (MIB's format) and the
    figures. `workers` share the scoring, the curve and the circuit runs out."""
    workers = workers or Workers(model)
    from interp.plotting import discovery_figures

    classes = head_classes(model, ioi_results) if task == "ioi" else None  # read first: a bad file fails fast
    start = time.perf_counter()
    prepared, dataset = task_data(model, task, n, seed, protocol, metric_name)
    tokens, metric = prepared.tokens, prepared.metric
    found = discover(
        model,
        tokens.clean,
        tokens.corrupt,
        metric,
        method,
        top_n,
        selection,
        intervention,
        steps,
        CIRCUIT_FAITHFULNESS,
        max_memory=max_memory,
        quiet=quiet,
        workers=workers,
    )
    scored, curve, circuit, graph = found.scores, found.curve, found.circuit, found.scores.graph

    def run_circuits(masks: list[torch.Tensor]) -> np.ndarray:
        return torch.stack(
            circuit_values(
                model, tokens.clean, tokens.corrupt, metric, masks, intervention, max_memory=max_memory, workers=workers
            )
        ).numpy()

    cost = {}
    groups = [i if pair.group is None else pair.group for i, pair in enumerate(prepared.task.pairs)]
    bootstrap = prepared.bootstrap(protocol.bootstrap, seed)
    sure = sureness(found, groups, bootstrap, protocol, seed, run_circuits, cost)

    info = provenance(model, seed)
    # written first: results.json says which file (its sha256) holds the scores it was computed from
    scores_file = write_array(Path(out_dir) / PER_PROMPT_SCORES, edge_values(scored.per_prompt, graph))
    results = {
        **info,
        **workers.describe(),
        **prepared.describe(),
        "method": method,
        "intervention": intervention,
        "steps": scored.steps,
        "selection_method": selection,
        "protocol": asdict(protocol),
        "prepend_bos": tokens.prepend_bos,
        "bootstrap": None if bootstrap is None else bootstrap.describe(),
        "graph": {
            "n_layers": graph.n_layers,
            "n_heads": graph.n_heads,
            "n_nodes": len(graph.node_names()),
            "n_edges": graph.n_edges,
        },
        "clean_metric": curve.full_metric,
        "empty_circuit_metric": curve.empty_metric,
        **pick(sure["intervals"], "clean_metric_ci", "empty_circuit_metric_ci"),
        "curve": {**curve.as_dict(), **rename(sure["intervals"], curve_faithfulness_ci="faithfulness_ci")},
        "cpr": curve.cpr,
        "cmd": curve.cmd,
        **pick(sure["intervals"], "cpr_ci", "cmd_ci"),
        "circuit": {
            "rule": found.rule,
            "n_selected": found.n_selected,
            "n_edges": circuit.n_edges,
            "faithfulness": found.circuit_faithfulness,
            **rename(sure["intervals"], circuit_faithfulness_ci="faithfulness_ci"),
            "fraction_of_edges": circuit.n_edges / graph.n_edges,
            "edges": circuit.edges(),
            "heads": [list(head) for head in circuit.heads()],
        },
        **sure["tests"],
        "edge_order": "EAP-IG's (interp.graph.Graph.edge_list): scores[i] belongs to edge_names[i]",
        "edge_names": graph.edge_names(),
        "scores": [float(circuit.scores[w, r]) for w, r in graph.edge_list()],
        "memory": {
            "chunk": scored.chunk_prompts,
            "estimate_bytes": scored.memory_estimate,
            "peak_cuda_bytes": scored.peak_memory,
            "max_memory": max_memory,
        },
        "per_prompt": {
            "clean_metric": rounded(curve.per_prompt["full"]),
            "empty_circuit_metric": rounded(curve.per_prompt["empty"]),
            "curve_metric": rounded(curve.per_prompt["circuits"]),
            "circuit_metric": rounded(found.circuit_per_prompt),
            "edge_scores": {**scores_file, "order": "edge_names x prompts"},
        },
        "dataset": dataset,
    }
    if model.interp_source.circuit_edges is not None:
        results["reference"] = {
            "source": "planted circuit (interp.planted)",
            **reference_aucs(circuit, model.interp_source.circuit_edges),
            "nodes": node_overlap(circuit, model.interp_source.circuit_edges),
        }
    if classes is not None:
        source, heads = classes
        results["head_comparison"] = {"source": source, **head_overlap(circuit.heads(), heads)}
    out_dir = Path(out_dir)
    write_json(out_dir / "results.json", results)
    circuit.save(out_dir / "circuit.json")
    prepared.task.save(out_dir / "task.json")  # the exact pairs: `interp evaluate --task` takes them back
    discovery_figures(read_json(out_dir / "results.json"), out_dir)
    write_json(
        out_dir / "timing.json",
        {
            "total_seconds": time.perf_counter() - start,
            "steps": {
                "scores": {"seconds": scored.seconds, "method": method},
                "evaluation": {
                    "seconds": found.evaluation_seconds,
                    "circuits": len(curve.budgets) + 2 + (top_n is not None),
                },
                **cost,
            },
        },
    )
    return results


def task_data(model, task: str, n: int | None, seed: int, protocol: Protocol, metric: str | None):
    """(the prepared task, the dataset as results.json keeps it): IOI as `interp ioi` builds it (its dataset record,
    with the names' vocabulary), or any other task (its pairs and exact tokens)."""
    if task != "ioi":
        prepared = prepare(model, load_task(task, model, n, seed), metric, protocol.prepend_bos)
        return prepared, prepared.data()
    clean, corrupt = protocol.datasets(model, n or 100, seed)
    prepared = prepare(model, ioi_task(clean, corrupt), metric, clean.prepend_bos)
    return prepared, dataset_json(clean, corrupt, NAME_LISTS[protocol.names])


def node_overlap(circuit, reference_edges: list[str]) -> dict:
    """The circuit's heads and MLPs against the reference's (the writers of its edges)."""
    found = {name for name, kept in circuit.nodes_in_graph().items() if kept} - {"input", "logits"}
    return overlap(found, {edge.split("->")[0] for edge in reference_edges} - {"input"})


def edge_values(per_prompt: torch.Tensor, graph) -> np.ndarray:
    """[n_writers, n_readers, n_prompts] -> [n_edges, n_prompts] float32, edges in `edge_names` order."""
    writers, readers = zip(*graph.edge_list())
    return per_prompt[list(writers), list(readers)].float().numpy()


def sureness(
    found: Discovery,
    template_ids: list,
    bootstrap: Bootstrap | None,
    protocol: Protocol,
    seed: int,
    run_circuits,
    cost: dict,
) -> dict:
    """How sure each finding is, from the per-prompt values (`interp.circuits.discover_sureness`): "intervals" (the
    `_ci` entries, none without a bootstrap) and "tests" (`selection`, `template_holdout`, `random_circuits`);
    their costs are added to `cost`."""
    curve, circuit, graph = found.curve, found.circuit, found.scores.graph
    full, empty, n = curve.per_prompt["full"], curve.per_prompt["empty"], len(template_ids)
    intervals, tests = {}, {}
    if bootstrap is not None:
        intervals = metric_intervals(
            bootstrap, full, empty, curve.per_prompt["circuits"], found.circuit_per_prompt, curve.budgets
        )
        tests["selection"] = timed(
            cost,
            "selection_stability",
            0,
            lambda: selection_stability(
                graph, found.scores.per_prompt, bootstrap, circuit, found.n_selected, curve.selection
            ),
        )
    if protocol.template_holdout and circuit.n_edges:
        tests["template_holdout"] = timed(
            cost,
            "template_holdout",
            2 * n,
            lambda: template_holdout(
                graph,
                found.scores.per_prompt,
                template_ids,
                seed,
                circuit,
                found.circuit_per_prompt,
                full,
                empty,
                found.n_selected,
                curve.selection,
                run_circuits,
            ),
        )
    if protocol.random_circuits and circuit.n_edges:
        tests["random_circuits"] = timed(
            cost,
            "random_circuits",
            n * protocol.random_circuits,
            lambda: random_circuits(
                graph,
                found.circuit_faithfulness,
                circuit.n_edges,
                protocol.random_circuits,
                seed,
                full,
                empty,
                run_circuits,
            ),
        )
    return {"intervals": intervals, "tests": tests}


def pick(values: dict, *keys: str) -> dict:
    return {key: values[key] for key in keys if key in values}


def rename(values: dict, **names: str) -> dict:
    """{new: values[old]} for each old=new present."""
    return {new: values[old] for old, new in names.items() if old in values}


def add_arguments(parser) -> None:
    add_model(parser)
    parser.add_argument(
        "--task",
        default="ioi",
        metavar="FILE|ioi|greater-than|capitals",
        help="the IOI paper's pairs (default), greater-than (Hanna et al.), or a task file (interp / auto-circuit "
        "JSON, JSONL, EAP-IG CSV)",
    )
    parser.add_argument("--metric", choices=METRICS, help="default: the task's own, else logit-diff")
    parser.add_argument(
        "--method",
        default="eap-ig",
        choices=METHODS,
        help="eap-ig (default), eap, or exact (one patched run per edge: slow on big graphs)",
    )
    parser.add_argument(
        "--n",
        type=int,
        help="prompt pairs built (ioi: default 100; greater-than: 97), or the first N of a task file (default all)",
    )
    parser.add_argument(
        "--top-n",
        type=int,
        help="edges in the circuit (default: the smallest MIB budget whose "
        f"faithfulness reaches {CIRCUIT_FAITHFULNESS})",
    )
    parser.add_argument(
        "--selection",
        default="topn",
        choices=["topn", "greedy"],
        help="top edges by |score| (default) or grown greedily from the logits",
    )
    add_intervention(parser)
    parser.add_argument("--steps", type=int, default=5, help="EAP-IG interpolation steps (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--names",
        choices=sorted(NAME_LISTS),
        default="paper",
        help="the IOI paper's 99 names (default) or the 109 the organism was trained on",
    )
    parser.add_argument(
        "--ioi-results", help="an `interp ioi` results.json whose head classes the circuit is compared with"
    )
    parser.add_argument(
        "--max-memory",
        type=float,
        metavar="MIB",
        help="working memory for scoring and evaluation in MiB (default 1024): prompts are chunked "
        "to fit, and refused when one does not",
    )
    parser.add_argument("--out", help="output directory (default results/discover/<model>/)")
    add_bootstrap(parser)
    parser.add_argument(
        "--random-circuits",
        type=int,
        default=100,
        metavar="N",
        help="random circuits of at least the found circuit's size for its faithfulness' p-value (100; 0: off)",
    )
    parser.add_argument(
        "--template-holdout",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="select the circuit on half of the templates, evaluate it on the other half (default: yes)",
    )
    parser.add_argument(
        "--prepend-bos",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="BOS before every prompt (default: no for ioi, as the paper; as a task file says; yes otherwise)",
    )
    add_workers(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run_from_args(args) -> None:
    if args.n is not None and args.n < 1:
        raise InterpError(f"--n must be at least 1, not {args.n}")
    if args.top_n is not None and args.top_n < 0:
        raise InterpError(f"--top-n must be at least 0, not {args.top_n}")
    if args.random_circuits < 0:
        raise InterpError(f"--random-circuits takes a number >= 0 (0 turns the test off), not {args.random_circuits}")
    protocol = Protocol(
        names=args.names,
        prepend_bos=args.prepend_bos if args.prepend_bos is not None or args.task != "ioi" else False,
        bootstrap=check_resamples(args.bootstrap),
        random_circuits=args.random_circuits,
        template_holdout=args.template_holdout,
    )
    model = load(args)
    with workers_for(args, model) as pool:
        results = run(
            model,
            args.out or default_out_dir("discover", args.model),
            args.task,
            args.method,
            args.n,
            args.seed,
            args.top_n,
            args.intervention,
            args.steps,
            args.selection,
            None if args.max_memory is None else int(args.max_memory * 2**20),
            args.ioi_results,
            args.quiet,
            protocol,
            pool,
            args.metric,
        )
    circuit = results["circuit"]
    print(
        f"{results['method']} on {results['model']}: circuit of {circuit['n_edges']} of "
        f"{results['graph']['n_edges']} edges ({100 * circuit['fraction_of_edges']:.2f}%), "
        f"faithfulness {circuit['faithfulness']:.3f}{with_interval(circuit.get('faithfulness_ci'))}; "
        f"CPR {results['cpr']:.3f}{with_interval(results.get('cpr_ci'))}, "
        f"CMD {results['cmd']:.3f}{with_interval(results.get('cmd_ci'))}"
    )
    if "selection" in results:
        print(
            f"{len(results['selection']['stable'])} of {circuit['n_edges']} circuit edges stable (selected in >= "
            f"{results['selection']['stable_at']:.0%} of {results['bootstrap']['n_resamples']} resamples)"
        )
    if "random_circuits" in results:
        test = results["random_circuits"]
        print(
            f"against {test['n']} random circuits of >= {test['size']} edges: percentile {test['percentile']:.0f}, "
            f"p = {test['p_value']:.3f}"
        )
    if "reference" in results:
        print(
            f"edge ROC AUC {results['reference']['edge_roc_auc']:.4f}, "
            f"node ROC AUC {results['reference']['node_roc_auc']:.4f} against the planted circuit"
        )


if __name__ == "__main__":
    from interp.cli import main

    sys.exit(main(["discover", *sys.argv[1:]]))
