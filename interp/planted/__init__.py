"""Planted models: GPT-2-shaped weights constructed, not trained, so that a known circuit does a task: ground truth
for checking that the pipelines find what is there. They load as any GPT-2 (`load_model("planted:ioi")`).

- `planted:ioi`: GPT-2 small's shape; the IOI paper's mechanism at the paper's heads; `planted:ioi:SEED` moves
  every role to heads drawn from SEED. `ioi_layout(seed)` and `ioi_edges(seed)` say where the circuit is.
- `planted:capitals`: GPT-2 medium's shape; Merullo et al.'s mechanism at the paper's layers.

Nothing outside this package knows a model was planted: the experiments measure it like any other.
"""
from __future__ import annotations

from interp.errors import InterpError
from interp.planted.ioi import ioi_edges, ioi_layout

SPECS = ("planted:ioi", "planted:ioi:SEED", "planted:capitals")


def parse_planted(spec: str) -> tuple[str, int | None]:
    """("ioi", its seed or None) or ("capitals", None) for a planted spec; a one-line error for any other."""
    parts = spec.split(":")
    if parts[:2] == ["planted", "ioi"] and len(parts) <= 3:
        if len(parts) == 3 and not parts[2].isdigit():
            raise InterpError(f"the seed in {spec!r} must be a whole number (planted:ioi:SEED)")
        return "ioi", int(parts[2]) if len(parts) == 3 else None
    if spec == "planted:capitals":
        return "capitals", None
    raise InterpError(f"unknown planted model {spec!r}; known: {', '.join(SPECS)}")


def build_planted(spec: str):
    """(GPT2LMHeadModel, the circuit planted in it: {class: [(layer, head), ...]} or None) for a planted spec."""
    from interp.planted import capitals, ioi

    kind, seed = parse_planted(spec)
    if kind == "ioi":
        return ioi.build(seed), ioi_layout(seed)
    return capitals.build(), None


def planted_edges(spec: str) -> list[str] | None:
    """The edges of the circuit planted in a model (EAP-IG / MIB names), where they are known: planted:ioi[:SEED]."""
    kind, seed = parse_planted(spec)
    return ioi_edges(seed) if kind == "ioi" else None


__all__ = ["build_planted", "ioi_edges", "ioi_layout", "parse_planted", "planted_edges", "SPECS"]
