"""Figures, one function per kind, all in one style. Each takes plain results data (what results.json holds),
so every figure can be regenerated from its results file alone. Files: PNG and SVG, deterministic names."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from interp.results import atomic_path  # noqa: E402

STYLE = {
    "figure.dpi": 110, "savefig.dpi": 150, "font.size": 9, "axes.titlesize": 10, "axes.titleweight": "bold",
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": False, "legend.frameon": False,
    "svg.hashsalt": "interp", "svg.fonttype": "none",
}
DIVERGING = "RdBu"
SEQUENTIAL = "viridis"


def save_figure(fig, out_dir: str | Path, name: str) -> list[Path]:
    """Write `name`.png and `name`.svg into out_dir atomically; close the figure."""
    paths = []
    for suffix in (".png", ".svg"):
        path = Path(out_dir) / f"{name}{suffix}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=suffix[1:], bbox_inches="tight", metadata={"Date": None} if suffix == ".svg"
                        else {"Software": None})
        paths.append(path)
    plt.close(fig)
    return paths


def token_label(token: str) -> str:
    return repr(token)[1:-1] if token.strip() != token or not token else token


def plot_lens(data: dict, title: str | None = None):
    """Logit lens of one prompt: top token per (boundary, position), and target probability per boundary."""
    grid, tokens = data["top1_grid"], data["tokens"]
    probs = grid["probs"]
    n_boundaries, n_pos = len(probs), len(tokens)
    has_targets = "targets" in data["layers"][0]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2 if has_targets else 1, figsize=(min(3 + 0.9 * n_pos, 16) + 4 * has_targets,
                                                                      1.5 + 0.35 * n_boundaries),
                                 gridspec_kw={"width_ratios": [3, 1.3]} if has_targets else None, squeeze=False)
        ax = axes[0, 0]
        image = ax.imshow(probs, cmap=SEQUENTIAL, vmin=0, vmax=1, aspect="auto", origin="lower")
        for b in range(n_boundaries):
            for p in range(n_pos):
                ax.text(p, b, token_label(grid["tokens"][b][p])[:10], ha="center", va="center", fontsize=7,
                        color="black" if probs[b][p] > 0.6 else "white")
        ax.set_xticks(range(n_pos), [token_label(t) for t in tokens], rotation=45, ha="right")
        ax.set_yticks(range(n_boundaries), [layer["name"] for layer in data["layers"]])
        ax.set_xlabel("input position (token)")
        ax.set_ylabel("residual stream after")
        ax.set_title(title or f"Logit lens: top next token ({data['model']})")
        fig.colorbar(image, ax=ax, label="probability of the top token", fraction=0.03)
        if has_targets:
            ax = axes[0, 1]
            for target in data["layers"][0]["targets"]:
                ax.plot([layer["targets"][target]["prob"] for layer in data["layers"]], range(n_boundaries),
                        marker="o", label=token_label(target))
            ax.set_yticks(range(n_boundaries), [layer["name"] for layer in data["layers"]])
            ax.set_xlim(0, 1)
            ax.set_xlabel("probability at the last position")
            ax.set_title("Target tokens")
            ax.legend(loc="best")
        fig.tight_layout()
    return fig
