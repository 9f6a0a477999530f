"""Figures, one function per kind, all in one style. Each takes plain results data (what results.json holds),
so every figure can be regenerated from its results file alone. Files: PNG and SVG, deterministic names."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from interp.results import atomic_path  # noqa: E402
from interp.stats import crosses  # noqa: E402

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "legend.frameon": False,
    "svg.hashsalt": "interp",
    "svg.fonttype": "none",
}
DIVERGING = "RdBu"
SEQUENTIAL = "viridis"
CLASS_COLOURS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]


def save_figure(fig, out_dir: str | Path, name: str) -> list[Path]:
    """Write `name`.png and `name`.svg into out_dir atomically; close the figure."""
    paths = []
    with plt.rc_context(STYLE):  # savefig reads svg.hashsalt now, not when the figure was drawn
        for suffix in (".png", ".svg"):
            path = Path(out_dir) / f"{name}{suffix}"
            with atomic_path(path) as tmp:
                fig.savefig(
                    tmp,
                    format=suffix[1:],
                    bbox_inches="tight",
                    metadata={"Date": None} if suffix == ".svg" else {"Software": None},
                )
            paths.append(path)
    plt.close(fig)
    return paths


def token_label(token: str) -> str:
    """A token as an axis label: newlines and tabs made visible."""
    return token.replace("\n", "\\n").replace("\t", "\\t")


def plot_layer_grid(
    grid,
    title: str,
    label: str,
    marked: dict[str, list] | None = None,
    columns: list[str] | None = None,
    column_title: str = "head",
    center: float = 0.0,
    intervals=None,
    threshold: float | None = None,
):
    """A layers x (heads or positions) grid, diverging colours centred at `center`; named groups of
    (layer, column) cells outlined; `columns` labels the columns (e.g. the prompt's tokens). With `intervals`
    ([layer, column, 2]), cells whose interval crosses +-`threshold` get a cross, those whose interval crosses zero
    a dot."""
    import numpy as np

    values = np.asarray(grid, dtype=float)
    n_layers, n_columns = values.shape
    limit = max(float(np.nanmax(np.abs(values - center))), 1e-9)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(1.6 + 0.42 * n_columns, 1.2 + 0.36 * n_layers))
        image = ax.imshow(
            values, cmap=DIVERGING, vmin=center - limit, vmax=center + limit, aspect="auto", origin="lower"
        )
        if columns is None:
            ax.set_xticks(range(n_columns))
        else:
            ax.set_xticks(range(n_columns), [token_label(c) for c in columns], rotation=45, ha="right")
        ax.set_yticks(range(n_layers))
        ax.set_xlabel(column_title)
        ax.set_ylabel("layer")
        ax.set_title(title)
        fig.colorbar(image, ax=ax, label=label, fraction=0.04)
        if intervals is not None:
            crosses_threshold = (
                np.zeros(values.shape, dtype=bool)
                if threshold is None
                else (crosses(intervals, threshold) | crosses(intervals, -threshold))
            )
            crosses_zero = crosses(intervals, 0.0) & ~crosses_threshold
            for mask, marker, size in ((crosses_threshold, "x", 18), (crosses_zero, ".", 4)):
                rows, cols = np.nonzero(mask)
                ax.scatter(cols, rows, marker=marker, s=size, c="#444444", linewidths=0.8)
        for (name, members), colour in zip((marked or {}).items(), CLASS_COLOURS):
            for i, (layer, head) in enumerate(members):
                ax.add_patch(
                    plt.Rectangle(
                        (head - 0.5, layer - 0.5),
                        1,
                        1,
                        fill=False,
                        lw=2,
                        ec=colour,
                        label=name.replace("_", " ") if i == 0 else None,
                    )
                )
        if marked and any(marked.values()):
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize=8)
        fig.tight_layout()
    return fig


def plot_lens(data: dict, title: str | None = None):
    """Logit lens of one prompt: top token per (boundary, position), and target probability per boundary."""
    grid, tokens = data["top1_grid"], data["tokens"]
    probs = grid["probs"]
    n_boundaries, n_pos = len(probs), len(tokens)
    has_targets = "targets" in data["layers"][0]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            1,
            2 if has_targets else 1,
            figsize=(min(3 + 0.9 * n_pos, 16) + 4 * has_targets, 1.5 + 0.35 * n_boundaries),
            gridspec_kw={"width_ratios": [3, 1.3]} if has_targets else None,
            squeeze=False,
        )
        ax = axes[0, 0]
        image = ax.imshow(probs, cmap=SEQUENTIAL, vmin=0, vmax=1, aspect="auto", origin="lower")
        for b in range(n_boundaries):
            for p in range(n_pos):
                ax.text(
                    p,
                    b,
                    token_label(grid["tokens"][b][p])[:10],
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black" if probs[b][p] > 0.6 else "white",
                )
        ax.set_xticks(range(n_pos), [token_label(t) for t in tokens], rotation=45, ha="right")
        ax.set_yticks(range(n_boundaries), [layer["name"] for layer in data["layers"]])
        ax.set_xlabel("input position (token)")
        ax.set_ylabel("residual stream after")
        ax.set_title(title or f"Logit lens: top next token ({data['model']})")
        fig.colorbar(image, ax=ax, label="probability of the top token", fraction=0.03)
        if has_targets:
            ax = axes[0, 1]
            for target in data["layers"][0]["targets"]:
                ax.plot(
                    [layer["targets"][target]["prob"] for layer in data["layers"]],
                    range(n_boundaries),
                    marker="o",
                    label=token_label(target),
                )
            ax.set_yticks(range(n_boundaries), [layer["name"] for layer in data["layers"]])
            ax.set_xlim(0, 1)
            ax.set_xlabel("probability at the last position")
            ax.set_title("Target tokens")
            ax.legend(loc="best")
        fig.tight_layout()
    return fig


def boundary_axis(ax, n_boundaries: int) -> None:
    """Label the x axis with the residual-stream boundaries: the embeddings, then block numbers from 0 (at most
    about 12 ticks)."""
    ticks = ["emb"] + [str(block) for block in range(n_boundaries - 1)]
    step = max(1, n_boundaries // 12)
    ax.set_xticks(range(n_boundaries)[::step], ticks[::step])
    ax.set_xlabel("residual stream after block")


def ci_errors(values: list[float], intervals: list[list[float] | None]) -> list[list[float]] | None:
    """Matplotlib's `yerr` (distances below and above) for values with bootstrap intervals; None without them. A
    percentile interval need not hold the mean (a skewed statistic): the bar then ends at the mean."""
    if not all(intervals):
        return None
    return [
        [max(v - low, 0) for v, (low, _) in zip(values, intervals)],
        [max(high - v, 0) for v, (_, high) in zip(values, intervals)],
    ]


def plot_lens_trajectories(tasks: dict, model: str):
    """Capital-city experiment: per task, the median lens rank (quartile band) of the argument and of the answer
    at the last position, boundary by boundary; the dotted line marks the task's emergence block, the grey span
    its bootstrap 95% interval when the results have one."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(tasks), figsize=(3.8 * len(tasks), 3.4), squeeze=False, sharey=True)
        for ax, (task, data) in zip(axes[0], tasks.items()):
            for key, color in (("argument", "C0"), ("answer", "C3")):
                ranks = data["trajectory"][key]
                x = range(len(ranks["median"]))
                ax.plot(x, ranks["median"], marker="o", markersize=3, color=color, label=key)
                ax.fill_between(x, ranks["q25"], ranks["q75"], color=color, alpha=0.2, linewidth=0)
            boundary_axis(ax, len(x))
            ax.axvline(data["emergence_layer"] + 1, color="gray", linestyle=":", linewidth=1)
            interval = data.get("emergence_layer_ci")
            if interval:
                ax.axvspan(interval[0] + 1 - 0.3, interval[1] + 1 + 0.3, color="gray", alpha=0.15, linewidth=0)
            ax.set_yscale("log")
            within = f", 95% {interval[0]:g}-{interval[1]:g}" if interval else ""
            ax.set_title(f"{task} (emerges at block {data['emergence_layer']}{within}, n={data['n_measured']})")
        axes[0, 0].invert_yaxis()  # shared y: rank 1 on top in every panel
        axes[0, 0].set_ylabel("logit-lens rank at the last position")
        axes[0, 0].legend(loc="best")
        fig.suptitle(f"Argument, then answer: the logit lens across layers ({model})")
        fig.tight_layout()
    return fig


def plot_transplant(transplant: dict, model: str):
    """Capital-city experiment: the answer's mean reciprocal rank on cue-free prompts before and after the
    o-vector is written over the MLP outputs, per task; the share of prompts it did not help is annotated. Error
    bars and bracketed ranges: bootstrap 95% intervals, when the results have them."""
    tasks = list(transplant)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(tasks), 3.2))
        x = range(len(tasks))
        for offset, key, color, label in (
            (-0.2, "mrr_before", "C7", "cue-free prompt"),
            (0.2, "mrr_after", "C3", "with the o-vector"),
        ):
            values = [transplant[t][key] for t in tasks]
            ax.bar(
                [i + offset for i in x],
                values,
                width=0.4,
                color=color,
                label=label,
                capsize=3,
                yerr=ci_errors(values, [transplant[t].get(f"{key}_ci") for t in tasks]),
            )
        for i, task in enumerate(tasks):
            interval = transplant[task].get("no_effect_rate_ci")
            ax.annotate(
                f"no effect {transplant[task]['no_effect_rate']:.0%}"
                + (f"\n[{interval[0]:.0%}, {interval[1]:.0%}]" if interval else ""),
                (i, 1.02),
                ha="center",
                fontsize=8,
            )
        ax.set_xticks(list(x), [f"{t}\n(block {transplant[t]['layer']})" for t in tasks])
        ax.set_ylim(0, 1.2)
        ax.set_ylabel("mean reciprocal rank of the answer")
        ax.legend(loc="upper left", bbox_to_anchor=(1, 1))
        ax.set_title(f"o-vector transplant ({model})")
        fig.tight_layout()
    return fig


def plot_ablation_curves(ablation: dict, model: str):
    """Capital-city experiment: accuracy on abstractive (from memory) and extractive (fact in context) prompts as
    the MLPs of the last k blocks are removed, by zero (solid) and mean (dashed) ablation; bands: bootstrap 95%
    intervals, when the results have them."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(4.6, 3.2))
        for method, style in (("zero", "-"), ("mean", "--")):
            ks = [int(k) for k in ablation[method]]
            for key, color in (("abstractive_accuracy", "C3"), ("extractive_accuracy", "C0")):
                curve = [ablation[method][str(k)] for k in ks]
                ax.plot(
                    ks,
                    [point[key] for point in curve],
                    style,
                    marker="o",
                    markersize=3,
                    color=color,
                    label=f"{key.split('_')[0]}, {method}",
                )
                intervals = [point.get(f"{key}_ci") for point in curve]
                if all(intervals):
                    ax.fill_between(ks, *zip(*intervals), color=color, alpha=0.12, linewidth=0)
        ax.set_xticks(ks)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("MLPs removed (the last k blocks)")
        ax.set_ylabel("accuracy (first answer token)")
        ax.legend(loc="upper left", bbox_to_anchor=(1, 1))
        ax.set_title(f"Removing the top FFN layers ({model})")
        fig.tight_layout()
    return fig


def plot_faithfulness_curve(curve: dict, title: str):
    """Faithfulness of the top-edge circuits at MIB's budgets (log x), with CPR and CMD; with `faithfulness_ci`,
    each point's bootstrap interval as a band."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.2, 3.4))
        percent = [100 * b for b in curve["budgets"]]
        ax.axhline(1.0, color="0.6", lw=0.8, ls="--")
        ax.axhline(0.0, color="0.8", lw=0.8)
        if curve.get("faithfulness_ci") is not None:
            low, high = zip(*curve["faithfulness_ci"])
            ax.fill_between(percent, low, high, color=CLASS_COLOURS[0], alpha=0.2, lw=0, label="95% interval")
            ax.legend(loc="center right", fontsize=8, frameon=False)
        ax.plot(percent, curve["faithfulness"], "o-", color=CLASS_COLOURS[0], ms=4)
        ax.set_xscale("log")
        ax.set_xlabel("edges kept (% of the graph, before pruning)")
        ax.set_ylabel("faithfulness")
        ax.set_title(title)
        ax.text(
            0.98,
            0.04,
            f"CPR {curve['cpr']:.3f}   CMD {curve['cmd']:.3f}",
            transform=ax.transAxes,
            ha="right",
            fontsize=8,
            color="0.3",
        )
        fig.tight_layout()
    return fig


def node_position(name: str, n_heads: int, n_layers: int) -> tuple[float, float]:
    """Where a graph node sits: layer up the page (input below layer 0, logits above the last), heads left to
    right, the MLP to their right."""
    if name == "input":
        return (n_heads / 2, -1.0)
    if name == "logits":
        return (n_heads / 2, float(n_layers))
    if name.startswith("m"):
        return (n_heads + 0.5, int(name[1:]) + 0.45)
    layer, head = name[1:].split(".h")
    return (float(head), float(layer))


def plot_circuit_graph(edges: list[str], scores: dict[str, float], n_layers: int, n_heads: int, title: str):
    """A circuit's edges between its nodes, width by |score|, red where the score is positive, blue negative
    (letters mark the q/k/v input an edge enters)."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(2 + 0.55 * (n_heads + 2), 1.5 + 0.55 * (n_layers + 2)))
        largest = max((abs(scores[e]) for e in edges), default=1.0) or 1.0
        nodes = set()
        for edge in edges:
            writer, reader = edge.split("->")
            target = reader.split("<")[0]
            nodes.update((writer, target))
            (x1, y1), (x2, y2) = (node_position(n, n_heads, n_layers) for n in (writer, target))
            ax.plot(
                [x1, x2],
                [y1, y2],
                color="#b2182b" if scores[edge] > 0 else "#2166ac",
                lw=0.3 + 2.2 * abs(scores[edge]) / largest,
                alpha=0.55,
                zorder=1,
            )
        for name in sorted(nodes):
            x, y = node_position(name, n_heads, n_layers)
            ax.text(
                x,
                y,
                name,
                ha="center",
                va="center",
                fontsize=6,
                zorder=2,
                bbox={"boxstyle": "round", "fc": "#fee8c8" if name.startswith("m") else "#e0ecf4", "lw": 0.4},
            )
        ax.set_xlim(-1, n_heads + 1.5)
        ax.set_ylim(-1.7, n_layers + 0.7)
        ax.set_yticks(range(n_layers))
        ax.set_ylabel("layer")
        ax.set_xticks([])
        ax.set_title(title)
        fig.tight_layout()
    return fig


MAX_DRAWN_EDGES = 500  # a circuit graph with more edges than this is drawn with its strongest ones


def discovery_figures(results: dict, out_dir: str | Path) -> list[Path]:
    """The faithfulness curve and the circuit's graph of an `interp discover` run, from its results.json."""
    model, method = results["model"], results["method"]
    scores = dict(zip(results["edge_names"], results["scores"]))
    circuit = results["circuit"]
    paths = save_figure(
        plot_faithfulness_curve(
            {**results["curve"], "cpr": results["cpr"], "cmd": results["cmd"]},
            f"Faithfulness of {method} circuits ({model})",
        ),
        out_dir,
        "discover_faithfulness",
    )
    title = f"{method} circuit in {model}: {circuit['n_edges']} edges, faithfulness {circuit['faithfulness']:.2f}"
    drawn = circuit["edges"][:MAX_DRAWN_EDGES]  # highest |score| first
    if len(drawn) < circuit["n_edges"]:
        title += f"\n(the {len(drawn)} edges of highest |score| drawn)"
    paths += save_figure(
        plot_circuit_graph(drawn, scores, results["graph"]["n_layers"], results["graph"]["n_heads"], title),
        out_dir,
        "discover_circuit",
    )
    return paths
