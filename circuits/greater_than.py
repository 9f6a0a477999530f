"""Greater-than (Hanna, Liu & Variengien, NeurIPS 2023) in GPT-2 small: find the circuit by path patching, then
evaluate it beside the authors' and ACDC's.

    python circuits/greater_than.py --model planted:greater-than       (or: interp greater-than ...)

Task (`interp.data.greater_than`, as the authors' code builds it): "The {noun} lasted from the year {XX}{YY} to
the year {XX}" -> the next token is a two-digit year; the corrupted prompt has YY = 01. Metric: the probability
difference PD = sum_{y > YY} p(y) - sum_{y <= YY} p(y) over the tokens "00".."99" at the last position, per prompt;
beside it the cutoff sharpness logit(YY + 1) - logit(YY - 1) and the probability of every year given YY (the heat
map of the paper's Figure 1).

Method (the paper's order, `interp.paths`: a sender's direct connection to a receiver carries the sender's output
on the corrupted prompt, everything else clean):
1. every node -> logits; then -> MLP 11, MLP 10, 9, 8 (each MLP found is a receiver in its turn, latest first);
2. then into the q, k and v inputs of each head found (the heads read YY at its position), and on down: every
   component found becomes a receiver, until no new one is found.
A component is kept when its path's effect is at least `--threshold` (default 5%) of the whole corruption's effect
on PD and, with intervals on, its 95% interval excludes 0.

Evaluation (`interp.task_runs.evaluate_task`): the found circuit, and on GPT-2 small's shape the authors' and
ACDC's, as node circuits (every edge among their nodes) with every other edge corrupted: faithfulness as MIB
computes it. Edge-level discovery (EAP-IG, `interp.discovery`) on the same pairs, with ROC AUC against the
reference: the planted circuit of a planted model, ACDC's ground-truth edges on GPT-2 small.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from interp.cli import add_bootstrap, add_model, load
from interp.data.greater_than import cutoff_sharpness, greater_than_task, task_years, year_token_ids
from interp.errors import InterpError
from interp.results import default_out_dir, provenance, read_json, write_json
from interp.stats import check_resamples, overlap, rounded, with_interval
from interp.task_metrics import final_log_probs
from interp.task_runs import Prepared, evaluate_task, mean_with_interval, nodes_circuit, prepare

# The circuits the papers give for GPT-2 small (papers.md, section 6).
AUTHORS_NODES = [
    "a9.h1",
    "a8.h11",
    "a7.h10",
    "a6.h9",
    "a5.h5",
    "a8.h8",
    "a5.h1",
    "m8",
    "m9",
    "m10",
    "m11",
    "m0",
    "m1",
    "m2",
    "m3",
    "a0.h1",
    "a0.h3",
    "a0.h5",
]
ACDC_GROUPS = {  # ACDC's acdc/greaterthan/utils.py CIRCUIT
    "0305": ["a0.h3", "a0.h5"],
    "01": ["a0.h1"],
    "MEARLY": ["m0", "m1", "m2", "m3"],
    "AMID": ["a5.h5", "a6.h1", "a6.h9", "a7.h10", "a8.h11", "a9.h1"],
    "MLATE": ["m8", "m9", "m10", "m11"],
}
ACDC_NODES = [node for nodes in ACDC_GROUPS.values() for node in nodes]
THRESHOLD = 0.05
NO_EFFECT = 0.01  # PD falling by less than this under the corruption: the model does not do the task


def layer_of(node: str) -> int:
    return int(node[1:].split(".")[0])


def inputs_of(node: str) -> list[str]:
    return [f"{node}<{part}>" for part in "qkv"] if node.startswith("a") else [node]


def acdc_edges() -> list[str]:
    """ACDC's ground-truth edges for greater-than (`get_greaterthan_true_edges`), in EAP-IG's names."""
    edges = set()
    for group in ("0305", "01", "MEARLY"):
        edges |= {f"input->{reader}" for node in ACDC_GROUPS[group] for reader in inputs_of(node)}
    edges |= {f"{node}->logits" for group in ("AMID", "MLATE") for node in ACDC_GROUPS[group]}
    for group in ("MEARLY", "MLATE"):  # MLPs of a group feed each other
        edges |= {f"{a}->{b}" for a in ACDC_GROUPS[group] for b in ACDC_GROUPS[group] if layer_of(a) < layer_of(b)}
    for sender_group, receiver_group in (
        ("01", "MEARLY"),
        ("01", "AMID"),
        ("0305", "AMID"),
        ("MEARLY", "AMID"),
        ("AMID", "MLATE"),
    ):
        for a in ACDC_GROUPS[sender_group]:
            for b in ACDC_GROUPS[receiver_group]:
                same_layer_head_to_mlp = layer_of(a) == layer_of(b) and a.startswith("a") and b.startswith("m")
                if layer_of(a) < layer_of(b) or same_layer_head_to_mlp:
                    edges |= {f"{a}->{reader}" for reader in inputs_of(b)}
    last_amid = max(layer_of(node) for node in ACDC_GROUPS["AMID"])
    edges |= {f"m{a}->m{b}" for a in range(last_amid) for b in range(a + 1, last_amid)}  # MLPs before AMID
    edges |= {f"m{a}->{node}<q>" for node in ACDC_GROUPS["AMID"] for a in range(layer_of(node))}
    return sorted(edges)


# ----------------------------------------------------------------------------------------------------------------
# Behaviour


def behaviour(model, prepared: Prepared, bootstrap) -> dict:
    """PD on the clean and corrupted prompts, cutoff sharpness, and the mean probability of each year per YY: one
    forward of each prompt, the task's metric read from it."""
    tokens, metric = prepared.tokens, prepared.metric  # prob-diff reads the whole vocabulary at `end`
    clean_log_probs, corrupt_log_probs = (
        final_log_probs(model, side, tokens.end) for side in (tokens.clean, tokens.corrupt)
    )
    clean, corrupt = (metric.fn(log_probs[:, None]) for log_probs in (clean_log_probs, corrupt_log_probs))
    log_probs = clean_log_probs[:, year_token_ids(model.tokenizer)]
    years = torch.tensor(task_years(prepared.task))
    sharpness = cutoff_sharpness(log_probs, years)  # of logits: log-probabilities differ from them by a constant
    present = sorted(set(years.tolist()))
    heat = torch.stack([log_probs[years == yy].exp().mean(0) for yy in present])
    return {
        "pd_clean": mean_with_interval(clean, bootstrap),
        "pd_corrupt": mean_with_interval(corrupt, bootstrap),
        "cutoff_sharpness": mean_with_interval(sharpness, bootstrap),
        "probability_map": {"yy": present, "years": list(range(100)), "probability": rounded(heat.numpy())},
        "per_prompt": {
            "pd_clean": rounded(clean.cpu().numpy()),
            "pd_corrupt": rounded(corrupt.cpu().numpy()),
            "cutoff_sharpness": rounded(sharpness.numpy()),
            "yy": years.tolist(),
        },
    }


# ----------------------------------------------------------------------------------------------------------------
# Path patching, receiver by receiver


def path_patching(model, prepared: Prepared, bootstrap, threshold: float, whole: float, quiet: bool) -> dict:
    """The paper's order: logits, then each component found as a receiver (latest layer first, MLPs before the
    heads of their layer), until none is new. Returns the steps and the components found."""
    from interp.paths import path_patch_edges

    tokens = prepared.tokens
    found: list[str] = []
    queue, steps, done = ["logits"], [], set()
    while queue:
        receiver = queue.pop(0)
        done.add(receiver)
        step = {"receiver": receiver, "senders": []}
        for reader in inputs_of(receiver) if receiver != "logits" else ["logits"]:
            try:
                result = path_patch_edges(model, tokens.clean, tokens.corrupt, prepared.metric, [reader])
            except InterpError:  # a receiver in layer 0 with only the input before it still has that edge
                continue
            effects = mean_with_interval(result.effects, bootstrap)
            for i, sender in enumerate(result.senders):
                fraction = effects["mean"][i] / whole
                kept = sender != "input" and abs(fraction) >= threshold
                if "ci" in effects:
                    low, high = effects["ci"][i]
                    kept = kept and not (low <= 0 <= high)
                step["senders"].append(
                    {
                        "sender": sender,
                        "reader": reader,
                        "effect": effects["mean"][i],
                        "fraction": fraction,
                        **({"ci": effects["ci"][i]} if "ci" in effects else {}),
                        "kept": kept,
                    }
                )
                if kept and sender not in found:
                    found.append(sender)
                    if sender not in done and sender not in queue:
                        queue.append(sender)
        queue.sort(key=lambda node: (-layer_of(node), node.startswith("a")))
        steps.append(step)
        if not quiet:
            kept = sorted({s["sender"] for s in step["senders"] if s["kept"]})
            print(f"  -> {receiver}: {', '.join(kept) or 'nothing'}", file=sys.stderr)
    return {"steps": steps, "found": sorted(found, key=lambda node: (layer_of(node), node))}


# ----------------------------------------------------------------------------------------------------------------
# The experiment


def run(
    model,
    out_dir: str | Path,
    n: int = 97,
    seed: int = 0,
    threshold: float = THRESHOLD,
    n_resamples: int = 1000,
    discovery: bool = True,
    quiet: bool = False,
) -> dict:

    start = time.perf_counter()
    prepared = prepare(model, greater_than_task(n, seed, model.tokenizer), "prob-diff")
    bootstrap = prepared.bootstrap(n_resamples, seed)
    seen = behaviour(model, prepared, bootstrap)
    results = {
        **provenance(model, seed),
        **prepared.describe(),
        "threshold": threshold,
        "bootstrap": None if bootstrap is None else bootstrap.describe(),
        **{key: value for key, value in seen.items() if key != "per_prompt"},
        "per_prompt": seen["per_prompt"],
    }
    whole = seen["pd_clean"]["mean"] - seen["pd_corrupt"]["mean"]
    results["does_the_task"] = whole >= NO_EFFECT
    cost = {"behaviour": time.perf_counter() - start}
    if results["does_the_task"]:  # otherwise there is no effect to trace
        results |= trace(model, prepared, bootstrap, threshold, whole, discovery, quiet, cost)
    results["data"] = prepared.data()
    out_dir = Path(out_dir)
    write_json(out_dir / "results.json", results)
    prepared.task.save(out_dir / "task.json")
    figures_from_results(read_json(out_dir / "results.json"), out_dir)  # exactly what `interp plot` regenerates
    write_json(out_dir / "timing.json", {"total_seconds": time.perf_counter() - start, "steps": cost})
    return results


def trace(
    model, prepared: Prepared, bootstrap, threshold: float, whole: float, discovery: bool, quiet: bool, cost: dict
) -> dict:
    """Path patching, the circuits' faithfulness, the comparison with the reference and EAP-IG discovery."""
    from interp.discovery import discover, reference_aucs
    from interp.graph import Graph

    clock = time.perf_counter()
    patching = path_patching(model, prepared, bootstrap, threshold, -whole, quiet)
    cost["path_patching"] = time.perf_counter() - clock
    graph = Graph.of(model)
    circuits = {"found": patching["found"]}
    if (graph.n_layers, graph.n_heads) == (12, 12):
        circuits |= {"authors": AUTHORS_NODES, "acdc": ACDC_NODES}
    evaluated = {}
    for name, nodes in circuits.items():
        if nodes:
            circuit = nodes_circuit(graph, nodes, name)
            evaluated[name] = {**evaluate_task(model, prepared, circuit, bootstrap=bootstrap), "nodes": nodes}
            evaluated[name].pop("per_prompt")
    results = {"path_patching": patching, "circuits": evaluated}
    reference = reference_of(model)
    if reference is not None:
        source, nodes, edges = reference
        results["reference"] = {"source": source, "nodes": nodes, **overlap(patching["found"], nodes)}
    cost["circuits"] = time.perf_counter() - clock - cost["path_patching"]
    if discovery:
        clock = time.perf_counter()
        tokens = prepared.tokens
        found = discover(model, tokens.clean, tokens.corrupt, prepared.metric, "eap-ig", quiet=quiet)
        nodes = sorted({name for name, kept in found.circuit.nodes_in_graph().items() if kept} - {"input", "logits"})
        results["discovery"] = {
            "method": "eap-ig",
            "rule": found.rule,
            "n_edges": found.circuit.n_edges,
            "faithfulness": found.circuit_faithfulness,
            "nodes": nodes,
            "cpr": found.curve.cpr,
            "cmd": found.curve.cmd,
        }
        if reference is not None:
            results["discovery"] |= overlap(nodes, reference[1])
            results["discovery"]["roc_auc"] = reference_aucs(found.circuit, reference[2])
        cost["discovery"] = time.perf_counter() - clock
    return results


def figures_from_results(data: dict, out_dir: str | Path) -> list[Path]:
    """The probability of each year given YY (the paper's Figure 1), and each path-patching step's effects."""
    import matplotlib.pyplot as plt

    from interp.plotting import save_figure

    heat = data["probability_map"]
    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(
        np.array(heat["probability"]),
        aspect="auto",
        origin="lower",
        cmap="viridis",
        extent=(-0.5, 99.5, heat["yy"][0] - 0.5, heat["yy"][-1] + 0.5),
    )
    ax.plot([0, 99], [0, 99], color="white", linewidth=0.8, linestyle="--")
    ax.set(
        xlabel="predicted year (00-99)",
        ylabel="YY (the start year's last two digits)",
        title=f"greater-than on {data['model']}: p(year | YY), PD {data['pd_clean']['mean']:.3f}",
    )
    fig.colorbar(image, ax=ax, label="probability")
    paths = save_figure(fig, out_dir, "greater_than_probabilities")

    if "path_patching" not in data:
        return paths
    steps = data["path_patching"]["steps"]
    fig, axes = plt.subplots(len(steps), 1, figsize=(8, 1.6 * len(steps) + 0.5), squeeze=False)
    for ax, step in zip(axes[:, 0], steps):
        by_sender: dict[str, float] = {}
        for entry in step["senders"]:
            by_sender[entry["sender"]] = by_sender.get(entry["sender"], 0.0) + entry["fraction"]
        names = sorted(by_sender, key=lambda name: -abs(by_sender[name]))[:12]
        kept = {entry["sender"] for entry in step["senders"] if entry["kept"]}
        ax.bar(names, [by_sender[name] for name in names], color=["C3" if n in kept else "C7" for n in names])
        ax.axhline(data["threshold"], color="k", linewidth=0.6, linestyle=":")
        ax.set_ylabel(f"-> {step['receiver']}")
        ax.tick_params(axis="x", labelsize=7)
    axes[0, 0].set_title("path patching: effect on PD as a fraction of the corruption's (kept in red)")
    return paths + save_figure(fig, out_dir, "greater_than_path_patching")


def reference_of(model) -> tuple[str, list[str], list[str]] | None:
    """(source, nodes, edges) the circuit is compared with: a planted model's own, ACDC's on GPT-2 small."""
    source = model.interp_source
    if source.spec.startswith("planted:greater-than"):
        from interp.planted.greater_than import greater_than_circuit, greater_than_edges

        planted = greater_than_circuit()
        nodes = [f"a{layer}.h{head}" for layer, head in planted["heads"]] + [f"m{layer}" for layer in planted["mlps"]]
        return "planted circuit (interp.planted)", sorted(nodes), greater_than_edges()
    if source.spec == "gpt2":
        return "ACDC's ground truth (acdc/greaterthan/utils.py)", sorted(ACDC_NODES), acdc_edges()
    return None


def add_arguments(parser) -> None:
    add_model(parser)
    parser.add_argument(
        "--n", type=int, default=97, help="prompt pairs (default 97: every YY from 02 to 98 once; the authors': 490)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threshold",
        type=float,
        default=THRESHOLD,
        help="a path is kept when its effect is at least this fraction of the corruption's effect on "
        f"PD (default {THRESHOLD})",
    )
    parser.add_argument(
        "--discovery",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run EAP-IG edge discovery on the pairs (default: yes)",
    )
    add_bootstrap(parser)
    parser.add_argument("--out", help="output directory (default results/greater-than/<model>/)")
    parser.add_argument("--quiet", action="store_true", help="no progress")


def run_from_args(args) -> None:
    if args.n < 2:
        raise InterpError(f"--n must be at least 2, not {args.n}")
    if not 0 < args.threshold < 1:
        raise InterpError(f"--threshold is a fraction between 0 and 1, not {args.threshold}")
    n_resamples = check_resamples(args.bootstrap)
    model = load(args)
    results = run(
        model,
        args.out or default_out_dir("greater-than", args.model),
        args.n,
        args.seed,
        args.threshold,
        n_resamples,
        args.discovery,
        args.quiet,
    )
    pd, corrupt = results["pd_clean"], results["pd_corrupt"]
    print(
        f"greater-than on {results['model']} ({results['n_prompts']} pairs): PD {pd['mean']:.3f}"
        f"{with_interval(pd.get('ci'))}, on the 01 corruption {corrupt['mean']:.3f}"
        f"{with_interval(corrupt.get('ci'))}; cutoff sharpness {results['cutoff_sharpness']['mean']:.3f}"
    )
    if not results["does_the_task"]:
        print(f"the model does not do the task (PD falls by less than {NO_EFFECT} under the corruption): no circuit")
        return
    print(
        f"path patching found {len(results['path_patching']['found'])}: {', '.join(results['path_patching']['found'])}"
    )
    for name, circuit in results["circuits"].items():
        print(
            f"{name:>8} circuit ({len(circuit['nodes'])} nodes): faithfulness {circuit['faithfulness']:.3f}"
            f"{with_interval(circuit.get('faithfulness_ci'))}"
        )
    if "reference" in results:
        ref = results["reference"]
        print(f"against the {ref['source']}: precision {ref['precision']}, recall {ref['recall']}")
    if "discovery" in results:
        found = results["discovery"]
        auc = found.get("roc_auc", {})
        print(
            f"EAP-IG: {found['n_edges']} edges, faithfulness {found['faithfulness']:.3f}, nodes {found['nodes']}"
            + (f"; edge ROC AUC {auc['edge_roc_auc']:.3f}" if auc else "")
        )


if __name__ == "__main__":
    from interp.cli import main

    sys.exit(main(["greater-than", *sys.argv[1:]]))
