"""The IOI experiment's figures (`interp ioi`, `interp plot`): path-patching grids with the classes found, selection
frequencies, the circuit, the name movers' attention, completeness; each from results.json data alone."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from interp.plotting import CLASS_COLOURS, STYLE, plot_layer_grid, save_figure, token_label


def plot_selection_frequency(selection: dict, heads: dict[str, list], title: str):
    """Each head's selection frequency: in its class for the found heads (outlined, frequency written), and in
    any class for the others."""
    import numpy as np

    frequency = {name: np.asarray(grid, dtype=float) for name, grid in selection["frequency"].items()}
    shown = np.max(np.stack(list(frequency.values())), 0)
    for name, members in heads.items():
        for layer, head in members:
            shown[layer, head] = frequency[name][layer, head]
    fig = plot_layer_grid(shown, title, "fraction of resamples selecting the head", heads)
    ax = fig.axes[0]
    for members in heads.values():
        for layer, head in members:
            ax.text(head, layer, f"{shown[layer, head]:.2f}".lstrip("0"), ha="center", va="center", fontsize=6)
    return fig


IOI_FLOW = [
    ("previous_token", "induction", "K"),
    ("induction", "s_inhibition", "V"),
    ("duplicate_token", "s_inhibition", "V"),
    ("s_inhibition", "name_mover", "Q"),
    ("s_inhibition", "backup_name_mover", "Q"),
    ("s_inhibition", "negative_name_mover", "Q"),
]


def plot_ioi_circuit(heads: dict[str, list], n_layers: int, title: str):
    """The IOI circuit: every head a box at its layer, in its class's column; arrows along the patched paths."""
    order = [
        "previous_token",
        "duplicate_token",
        "induction",
        "s_inhibition",
        "name_mover",
        "backup_name_mover",
        "negative_name_mover",
    ]
    present = [name for name in order if heads.get(name)]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(1.5 + 1.6 * max(len(present), 2), 1.5 + 0.8 * n_layers))
        where: dict[str, list[tuple[float, float]]] = {}
        for column, name in enumerate(present):
            per_layer: dict[int, int] = {}
            for layer, head in heads[name]:
                offset = per_layer.get(layer, 0)
                per_layer[layer] = offset + 1
                x, y = column + 0.32 * offset - 0.16 * (sum(1 for l, _ in heads[name] if l == layer) - 1), layer
                where.setdefault(name, []).append((x, y))
                ax.text(
                    x,
                    y,
                    f"{layer}.{head}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    bbox={"boxstyle": "round", "fc": CLASS_COLOURS[order.index(name)], "alpha": 0.45},
                )
        for source, target, via in IOI_FLOW:
            for start in where.get(source, []):
                for end in (e for e in where.get(target, []) if e[1] > start[1]):  # paths run up the layers
                    ax.annotate(
                        "",
                        xy=end,
                        xytext=start,
                        arrowprops={"arrowstyle": "->", "lw": 0.8, "color": "0.45", "shrinkA": 12, "shrinkB": 12},
                    )
            later = [(a, b) for a in where.get(source, []) for b in where.get(target, []) if b[1] > a[1]]
            if later:
                ax.text(*[(u + v) / 2 for u, v in zip(*later[0])], via, fontsize=7, color="0.3")
        ax.set_xticks(range(len(present)), [name.replace("_", " ") for name in present], rotation=20, ha="right")
        ax.set_xlim(-0.7, max(len(present), 2) - 0.3)
        ax.set_yticks(range(n_layers))
        ax.set_ylim(-0.7, n_layers - 0.3)
        ax.set_ylabel("layer")
        ax.set_title(title)
        fig.text(
            0.99,
            0.01,
            "arrow labels: the receiving heads' input (Q/K/V) that the path was patched into",
            ha="right",
            fontsize=7,
            color="0.4",
        )
        fig.tight_layout()
    return fig


def plot_name_mover_attention(mechanism: dict, title: str):
    """Bar chart: where each name mover looks from END (IO vs S)."""
    attention = mechanism.get("name_mover_attention", {})
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(1.5 + 0.8 * max(len(attention), 1), 3))
        labels = list(attention)
        xs = range(len(labels))
        ax.bar([x - 0.2 for x in xs], [attention[k]["to_IO"] for k in labels], 0.4, label="to IO")
        ax.bar([x + 0.2 for x in xs], [attention[k]["to_S"] for k in labels], 0.4, label="to S1 + S2")
        ax.set_xticks(list(xs), labels)
        ax.set_xlabel("name mover head (layer.head)")
        ax.set_ylabel("attention from END")
        ax.set_ylim(0, 1)
        ax.set_title(title)
        ax.legend()
        fig.tight_layout()
    return fig


def plot_completeness(circuits: dict[str, dict], title: str):
    """The IOI paper's completeness plot: F(C \\ K) against F(M \\ K) for every knock-out set K (whole classes,
    random subsets, the greedy search), one marker per kind and circuit; a complete circuit lies on the diagonal."""
    kinds = {"classes": ("o", "class"), "random": ("s", "random subset"), "greedy": ("^", "greedy")}
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(4.6, 4.2))
        points = []
        for colour, (circuit, completeness) in zip(CLASS_COLOURS, circuits.items()):
            for kind, (marker, label) in kinds.items():
                entries = completeness[kind].values() if kind == "classes" else completeness[kind]
                xs, ys = [e["model"] for e in entries], [e["circuit"] for e in entries]
                points += xs + ys
                if xs:
                    ax.scatter(xs, ys, marker=marker, color=colour, alpha=0.8, label=f"{circuit}: {label}")
        low, high = (min(points), max(points)) if points else (0.0, 1.0)
        ax.plot([low, high], [low, high], color="0.6", lw=0.8, ls="--")
        ax.set_xlabel("F(M \\ K): model with K knocked out")
        ax.set_ylabel("F(C \\ K): circuit with K knocked out")
        ax.set_title(title)
        if points:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no circuit: nothing to knock out", ha="center", transform=ax.transAxes)
        fig.tight_layout()
    return fig


def plot_attention(patterns: dict[str, list], tokens: list[str], title: str):
    """Attention patterns (query x key) of a few heads on one prompt, one panel each, token-labelled."""
    import numpy as np

    names = list(patterns)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            1,
            max(len(names), 1),
            figsize=(0.5 + 0.3 * len(tokens) * max(len(names), 1), 1.2 + 0.3 * len(tokens)),
            squeeze=False,
        )
        labels = [token_label(t) for t in tokens]
        for ax, name in zip(axes[0], names):
            image = ax.imshow(np.asarray(patterns[name], dtype=float), cmap="Blues", vmin=0, vmax=1)
            ax.set_xticks(range(len(tokens)), labels, rotation=90, fontsize=7)
            ax.set_yticks(range(len(tokens)), labels, fontsize=7)
            ax.set_xlabel("key (attended to)")
            ax.set_title(f"head {name}")
        axes[0, 0].set_ylabel("query (attending)")
        fig.colorbar(image, ax=axes[0, -1], label="attention", fraction=0.04)
        fig.suptitle(title)
    return fig


GRID_TITLES = {
    "direct_effect": ("Heads -> logits (direct effect)", ["name_mover", "negative_name_mover"]),
    "into_name_mover_queries": ("Heads -> name movers' queries", ["s_inhibition"]),
    "into_s_inhibition_values": ("Heads -> S-inhibition values", ["induction", "duplicate_token"]),
    "into_induction_keys": ("Heads -> induction heads' keys", ["previous_token"]),
    "backup_rise": ("Direct logit attribution rise after name-mover knock-out", ["backup_name_mover"]),
}


def ioi_figures(results: dict, out_dir: str | Path) -> list[Path]:
    """Every figure of an IOI run, from its results.json alone."""
    model = results["model"]
    paths = []
    for name, grid in results["grids"].items():
        title, classes = GRID_TITLES[name]
        label = "relative change of IO-S logit diff" if name != "backup_rise" else "rise / clean logit diff"
        marked = {c: results["heads"][c] for c in classes}
        intervals = results.get("selection", {}).get("grid_intervals", {}).get(name)
        paths += save_figure(
            plot_layer_grid(
                grid, f"{title} ({model})", label, marked, intervals=intervals, threshold=results["threshold"]
            ),
            out_dir,
            f"ioi_{name}",
        )
    if "selection" in results:
        paths += save_figure(
            plot_selection_frequency(
                results["selection"], results["heads"], f"Selection frequency over bootstrap resamples ({model})"
            ),
            out_dir,
            "ioi_selection_frequency",
        )
    n_layers = len(next(iter(results["grids"].values())))
    paths += save_figure(
        plot_ioi_circuit(results["heads"], n_layers, f"IOI circuit found in {model}"), out_dir, "ioi_circuit"
    )
    paths += save_figure(
        plot_name_mover_attention(results["mechanism"], f"Name movers' attention ({model})"),
        out_dir,
        "ioi_name_mover_attention",
    )
    if "nodes" in results["evaluation"]:  # node-level evaluation (results files from before it have no such plot)
        circuits = {"found": results["evaluation"]["completeness"]}
        for name in ("paper", "planted"):
            if f"{name}_circuit" in results:
                circuits[f"{name}'s" if name == "paper" else name] = results[f"{name}_circuit"]["completeness"]
        paths += save_figure(plot_completeness(circuits, f"Completeness ({model})"), out_dir, "ioi_completeness")
    example = results["example_attention"]
    if example["heads"]:
        paths += save_figure(
            plot_attention(example["heads"], example["tokens"], f"Name movers on an example prompt ({model})"),
            out_dir,
            "ioi_attention_patterns",
        )
    return paths
