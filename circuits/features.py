"""Feature circuits (Marks et al. 2024, "Sparse Feature Circuits") on any prompt-pair task.

    interp dictionaries attribute --task ioi --model organism            (dictionaries: organism:saes)
    interp dictionaries attribute --task ioi --model planted:ioi         (the planted dictionaries; checked)

Dictionaries are spliced in with their error terms, so the model computes as it is. Each node (a
feature, or a dictionary's error, at a position) is attributed with integrated gradients (`interp.dictionaries
.features`: the corrupted run's nodes interpolated towards the clean run's, `--steps` points), per prompt; effects
are read at the task's named positions (IOI: IO, S1, S1+1, S2, END; every task: END) and averaged over prompts,
with bootstrap intervals. The `--exact` nodes of largest mean effect are then patched exactly, one at a time, at
each prompt's own position (the agreement of the two is reported), and the edges into the strongest nodes from the
dictionary before theirs are attributed as Marks et al. do. Effects are changes of the task metric when a node
alone goes from its corrupted to its clean value (denoising).

On planted:ioi the dictionaries are the planted ones (decoder rows: the planted directions), and the strongest
nodes are checked against the mechanism: precision (the share of each prompt's top nodes that are a planted
direction of that prompt's names or flags at a position where the mechanism writes it) and recall (the share of the
chain N:S at S2, D:S at S2, I:S at END, O:IO at END found among them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from interp.dictionaries.dictionary import Dictionary
from interp.dictionaries.features import Attribution, FeatureNode, attribute_features, feature_edges, patch_features
from interp.errors import InterpError
from interp.results import jsonable, provenance, write_json
from interp.stats import Bootstrap, rounded
from interp.task_runs import Prepared, mean_with_interval

PLANTED_IOI_LAYERS = (3, 7, 9, 11)  # after previous-token, induction, S-inhibition and name-mover stages
CHAIN = (("N", "S", "S2"), ("D", "S", "S2"), ("I", "S", "END"), ("O", "IO", "END"))  # planted:ioi's mechanism


def default_dictionaries(model) -> list[Dictionary]:
    from interp.dictionaries.formats import load_dictionaries
    from interp.planted.dictionaries import planted_dictionary

    spec = model.interp_source.spec
    if spec == "organism":
        return load_dictionaries("organism:saes", model, model.cfg.device)
    if spec.startswith("planted:ioi"):
        return [planted_dictionary(spec, f"blocks.{layer}.hook_resid_pre") for layer in PLANTED_IOI_LAYERS]
    raise InterpError(f"give the dictionaries to splice into {spec} (--dictionary)")


def read_positions(prepared: Prepared) -> dict[str, torch.Tensor]:
    """The named positions effects are read at: the task's own, and END (each prompt's last)."""
    return {**prepared.tokens.positions, "END": prepared.tokens.end}


def feature_circuit(
    model,
    prepared: Prepared,
    dictionaries: list[Dictionary],
    steps: int = 10,
    n_exact: int = 20,
    n_edges: int = 5,
    bootstrap: Bootstrap | None = None,
) -> tuple[dict, Attribution]:
    """The feature circuit of a task (see the module's docstring): results data, and the attribution it read."""
    tokens, metric = prepared.tokens, prepared.metric
    attribution = attribute_features(model, tokens.clean, tokens.corrupt, metric, dictionaries, steps, per_prompt=True)
    positions = read_positions(prepared)
    prompts = torch.arange(len(tokens))
    features, errors = [], []  # (mean |effect|, dictionary, feature, position name, per-prompt effects)
    for index, (effects, error_effects) in enumerate(
        zip(attribution.per_prompt_features, attribution.per_prompt_errors)
    ):
        for name, where in positions.items():
            at = effects[prompts, where]  # [prompt, d_sae]
            means = at.mean(0)
            for feature in means.abs().topk(min(n_exact, len(means))).indices.tolist():
                features.append((abs(float(means[feature])), index, feature, name, at[:, feature]))
            error = error_effects[prompts, where]
            errors.append((abs(float(error.mean())), index, "error", name, error))
    top = sorted(features, key=lambda c: -c[0])[:n_exact]
    rows = exact_rows(model, prepared, dictionaries, top + errors, bootstrap)
    feature_rows, error_rows = rows[: len(top)], rows[len(top) :]
    return {
        "dictionaries": [d.describe() for d in dictionaries],
        "steps": steps,
        "metric_clean": attribution.source_value,
        "metric_corrupt": attribution.base_value,
        "nodes": feature_rows,
        "error_nodes": error_rows,
        "agreement": {
            "pearson": pearson(feature_rows + error_rows),
            "features_pearson": pearson(feature_rows),
            "n_nodes": len(rows),
        },
        "edges": edges_into(model, prepared, dictionaries, top[:n_edges], n_edges, attribution),
    }, attribution


def exact_rows(model, prepared: Prepared, dictionaries, candidates, bootstrap) -> list[dict]:
    """Each candidate node's attribution beside its exact effect (patched alone at each prompt's position)."""
    tokens, positions = prepared.tokens, read_positions(prepared)
    nodes = [FeatureNode(index, feature, tuple(positions[name].tolist())) for _, index, feature, name, _ in candidates]
    exact, base_values = patch_features(model, tokens.clean, tokens.corrupt, prepared.metric, dictionaries, nodes)
    return [
        {
            "dictionary": dictionaries[index].label(),
            "feature": feature,
            "label": dictionaries[index].feature_label(feature),
            "position": name,
            "attribution": mean_with_interval(effects, bootstrap),
            "exact": mean_with_interval(patched - base_values, bootstrap),
        }
        for (_, index, feature, name, effects), patched in zip(candidates, exact)
    ]


def edges_into(model, prepared, dictionaries, top, n_edges: int, attribution: Attribution) -> list[dict]:
    """For each of the given nodes past the first dictionary, its `n_edges` strongest edges from the dictionary
    before it (Marks et al.), at each prompt's own position."""
    if n_edges == 0:
        return []
    tokens, positions, found = prepared.tokens, read_positions(prepared), []
    for _, index, feature, name, _ in top:
        if index == 0:
            continue
        upstream, downstream = dictionaries[index - 1], dictionaries[index]
        nodes = [(feature, positions[name])]
        (weights,) = feature_edges(
            model,
            tokens.clean,
            tokens.corrupt,
            prepared.metric,
            upstream,
            downstream,
            nodes,
            gradients=attribution.gradients[index],
        )
        strongest = weights.abs().topk(min(n_edges, len(weights))).indices.tolist()
        found.append(
            {
                "to": {"dictionary": downstream.label(), "label": downstream.feature_label(feature), "position": name},
                "from_dictionary": upstream.label(),
                "from": [
                    {
                        "feature": "error" if j == upstream.d_sae else j,
                        "label": "error" if j == upstream.d_sae else upstream.feature_label(j),
                        "effect": float(weights[j]),
                    }
                    for j in strongest
                ],
            }
        )
    return found


def pearson(rows: list[dict]) -> float | None:
    """Pearson correlation of the rows' mean attribution and mean exact effect."""
    x = np.array([row["attribution"]["mean"] for row in rows])
    y = np.array([row["exact"]["mean"] for row in rows])
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


# ----------------------------------------------------------------------------------------------------------------
# planted:ioi's ground truth


def planted_ioi_truth(model, prepared: Prepared) -> list[tuple[set[tuple[str, int]], set[tuple[str, int]]]]:
    """Per prompt: (every planted (direction, position) of its names and flags, the mechanism's chain in it)."""
    tokens, positions = prepared.tokens, prepared.tokens.positions
    word = lambda ids, i, name: model.tokenizer.decode([int(ids[i, positions[name][i]])]).strip()  # noqa: E731
    truth = []
    for i in range(len(tokens)):
        at = {name: int(positions[name][i]) for name in ("IO", "S1", "S1+1", "S2")} | {"END": int(tokens.end[i])}
        planted = {("f", at["IO"]), ("f", at["S1"]), ("f", at["S2"]), ("g", at["S1+1"]), ("g", at["IO"] + 1)}
        planted |= {("r", at["S2"])}
        names = {}
        for ids in (tokens.clean, tokens.corrupt):
            for slot in ("IO", "S1", "S2"):
                names.setdefault(slot, set()).add(word(ids, i, slot))
                planted |= {(f"N:{word(ids, i, slot)}", at[slot]), (f"R:{word(ids, i, slot)}", at[slot] + 1)}
                planted |= {(f"O:{word(ids, i, slot)}", at["END"])}
        s, io = word(tokens.clean, i, "S2"), word(tokens.clean, i, "IO")
        planted |= {(f"D:{s}", at["S2"]), (f"I:{s}", at["END"])}
        chain = {(f"{block}:{ {'S': s, 'IO': io}[who] }", at[where]) for block, who, where in CHAIN}
        truth.append((planted, chain))
    return truth


def planted_ioi_check(
    model, prepared: Prepared, dictionaries: list[Dictionary], attribution: Attribution, top_k: int = 20
) -> dict:
    """Precision and recall of each prompt's top_k nodes (by |attribution|) against planted:ioi's mechanism (see
    the module's docstring)."""
    truth = planted_ioi_truth(model, prepared)
    precision, recall, examples = [], [], []
    for i, (planted, chain) in enumerate(truth):
        scored = []
        for index, features in enumerate(attribution.per_prompt_features):
            flat = features[i].flatten()
            for where in flat.abs().topk(min(top_k, len(flat))).indices.tolist():
                position, feature = divmod(where, features.shape[-1])
                label = dictionaries[index].feature_label(feature).removeprefix("-")
                scored.append((abs(float(flat[where])), label, position))
        top = sorted(scored, key=lambda s: -s[0])[:top_k]
        found = {(label, position) for _, label, position in top}
        precision.append(len([1 for _, label, position in top if (label, position) in planted]) / len(top))
        recall.append(len(chain & found) / len(chain))
        if i < 3:
            examples.append([{"label": label, "position": position, "effect": value} for value, label, position in top])
    return {
        "top_k": top_k,
        "precision": rounded(float(np.mean(precision))),
        "recall": rounded(float(np.mean(recall))),
        "per_prompt_precision": precision,
        "per_prompt_recall": recall,
        "examples": examples,
    }


# ----------------------------------------------------------------------------------------------------------------
# Results and figures


def feature_figures(data: dict, out_dir: str | Path) -> list[Path]:
    """The strongest features' attribution beside their exact effect, and every error node's."""
    import matplotlib.pyplot as plt

    from interp.plotting import save_figure

    panels = [(rows, title) for rows, title in ((data["nodes"], "features"), (data["error_nodes"], "errors")) if rows]
    if not panels:
        return []
    height = 0.26 * max(len(rows) for rows, _ in panels) + 1.4
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), height), squeeze=False)
    for ax, (rows, title) in zip(axes[0], panels):
        bars(ax, rows, title)
    agreement = data["agreement"]["pearson"]
    fig.suptitle(
        f"feature circuit of {data['task']} on {data['model']}: change of {data.get('metric_name', 'the metric')} "
        f"when one node goes corrupt -> clean (attribution vs exact: r = "
        f"{'n/a' if agreement is None else f'{agreement:.2f}'})",
        fontsize=9,
    )
    fig.tight_layout()
    return save_figure(fig, out_dir, "feature_circuit")


def bars(ax, rows: list[dict], title: str) -> None:
    labels = [f"{n['dictionary'].removeprefix('blocks.')} {n['label']} @{n['position']}" for n in rows]
    y = np.arange(len(rows))
    for offset, key, colour in ((-0.2, "attribution", "#7570b3"), (0.2, "exact", "#1b9e77")):
        means = np.array([n[key]["mean"] for n in rows])
        errors = None
        if all("ci" in n[key] for n in rows):
            errors = np.abs(np.array([n[key]["ci"] for n in rows]).T - means)
        ax.barh(y + offset, means, height=0.4, xerr=errors, color=colour, label=key, error_kw={"linewidth": 0.6})
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_title(title)
    ax.legend(loc="lower right")


def figures_from_results(data: dict, out_dir: str | Path) -> list[Path]:
    if "vector" in data:
        from interp.circuits.feature_vector import vector_figure

        return vector_figure(data, out_dir)
    return feature_figures(data, out_dir)


def write_results(model, out: str | Path, data: dict, seed: int, prepared: Prepared | None = None) -> dict:
    data = jsonable({**provenance(model, seed), **data, **({"data": prepared.data()} if prepared else {})})
    write_json(Path(out) / "results.json", data)
    figures_from_results(data, out)
    return data


# ----------------------------------------------------------------------------------------------------------------
# Command line


def add_attribute_arguments(parser) -> None:
    from interp.cli import add_bootstrap, add_model
    from interp.dictionaries.cli import DICTIONARY_HELP
    from interp.task_cli import add_task

    add_task(parser)
    add_model(parser)
    parser.add_argument(
        "--dictionary",
        action="append",
        metavar="PATH",
        help=f"{DICTIONARY_HELP} (repeat; default: organism:saes on the organism, the planted dictionaries on "
        "planted:ioi)",
    )
    parser.add_argument("--steps", type=int, default=10, help="integrated-gradients points (default 10, as Marks)")
    parser.add_argument("--exact", type=int, default=20, help="the strongest nodes patched exactly (default 20)")
    parser.add_argument("--edges", type=int, default=5, help="edges kept into each strong node (default 5; 0: none)")
    add_bootstrap(parser)
    parser.add_argument("--out", help="output directory (default results/features/<task>/<model>/)")


def run_attribute(args) -> None:
    from interp.dictionaries.formats import load_dictionaries
    from interp.results import default_out_dir
    from interp.task_cli import prepared_run

    if args.steps < 1 or args.exact < 1 or args.edges < 0:
        raise InterpError("--steps and --exact must be at least 1, --edges at least 0")
    model, prepared, bootstrap = prepared_run(args)
    if args.dictionary:
        dictionaries = [d for spec in args.dictionary for d in load_dictionaries(spec, model, model.cfg.device)]
    else:
        dictionaries = default_dictionaries(model)
    dictionaries.sort(key=lambda d: d.writes.boundary)
    data, attribution = feature_circuit(model, prepared, dictionaries, args.steps, args.exact, args.edges, bootstrap)
    data = {"task": prepared.task.name, **prepared.describe(), **data}
    if prepared.task.name == "ioi" and model.interp_source.spec.startswith("planted:ioi"):
        if all(d.source_format == "planted" for d in dictionaries):
            data["planted_check"] = planted_ioi_check(model, prepared, dictionaries, attribution)
    out = args.out or default_out_dir(f"features/{prepared.task.name}", args.model)
    data = write_results(model, out, data, args.seed, prepared)
    print(
        f"feature circuit of {data['task']} on {args.model}: metric {data['metric_corrupt']:.3f} (corrupt) -> "
        f"{data['metric_clean']:.3f} (clean); attribution vs exact patching of {data['agreement']['n_nodes']} "
        f"nodes: r = {data['agreement']['pearson']} (features alone: {data['agreement']['features_pearson']})"
    )
    strongest_errors = sorted(data["error_nodes"], key=lambda n: -abs(n["attribution"]["mean"]))[:5]
    for node in data["nodes"][:10] + strongest_errors:
        print(
            f"  {node['dictionary']:>26} {str(node['label']):>14} @{node['position']:<5} "
            f"attribution {node['attribution']['mean']:+.3f}  exact {node['exact']['mean']:+.3f}"
        )
    if "planted_check" in data:
        check = data["planted_check"]
        scores = f"precision {check['precision']}, recall {check['recall']}"
        print(f"planted check (top {check['top_k']} nodes per prompt): {scores}")
    print(f"results: {Path(out) / 'results.json'}")
