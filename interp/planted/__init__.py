"""Planted models: GPT-2-shaped weights constructed, not trained, so that a known circuit does a task: ground truth
for checking that the pipelines find what is there. They load as any GPT-2 (`load_model("planted:ioi")`).

- `planted:ioi`: GPT-2 small's shape; the IOI paper's mechanism at the paper's heads; `planted:ioi:SEED` moves
  every role to heads drawn from SEED; `planted:ioi[:SEED]:noise=LEVEL` gives every head outside the circuit
  graded effects on the task (`interp.planted.ioi.minor_heads`; 0: none, as `planted:ioi`). `ioi_layout(seed)` and
  `ioi_edges(seed)` say where the circuit is.
- `planted:capitals`: GPT-2 medium's shape; Merullo et al.'s mechanism at the paper's layers.
- `planted:greater-than`: GPT-2 small's shape; Hanna et al.'s greater-than mechanism: END heads move YY's number to
  the last position, MLPs 9 and 10 raise the years above it (`greater_than_circuit()` and `greater_than_edges()`
  say where; its circuit as a model's `interp_source.circuit` is {"end_heads": [...]}).

Nothing outside this package knows a model was planted: the experiments measure it like any other.
"""

from __future__ import annotations

import math

from interp.errors import InterpError
from interp.planted.greater_than import END_HEADS, greater_than_circuit, greater_than_edges
from interp.planted.ioi import ioi_edges, ioi_layout

SPECS = (
    "planted:ioi",
    "planted:ioi:SEED",
    "planted:ioi[:SEED]:noise=LEVEL",
    "planted:capitals",
    "planted:greater-than",
)


def parse_planted(spec: str) -> tuple[str, int | None, float]:
    """("ioi", its seed or None, its noise level), ("capitals", None, 0.0) or ("greater-than", None, 0.0) for a
    planted spec; a one-line error for any other."""
    if spec in ("planted:capitals", "planted:greater-than"):
        return spec.removeprefix("planted:"), None, 0.0
    parts = spec.split(":")
    if parts[:2] != ["planted", "ioi"]:
        raise InterpError(f"unknown planted model {spec!r}; known: {', '.join(SPECS)}")
    options, seed, noise = parts[2:], None, 0.0
    if options and "=" not in options[0]:
        if not options[0].isdigit():
            raise InterpError(f"the seed in {spec!r} must be a whole number (planted:ioi:SEED)")
        seed = int(options.pop(0))
    if len(options) > 1 or (options and not options[0].startswith("noise=")):
        raise InterpError(
            f"{spec!r} has options planted:ioi does not take ({':'.join(options)}); "
            "it takes planted:ioi[:SEED][:noise=LEVEL]"
        )
    if options:
        level = options[0].removeprefix("noise=")
        try:
            noise = float(level)
        except ValueError:
            noise = math.nan
        if not (math.isfinite(noise) and noise >= 0):
            raise InterpError(
                f"the noise level in {spec!r} must be a number >= 0 (planted:ioi:noise=0.3), not {level!r}"
            )
    return "ioi", seed, noise


def build_planted(spec: str):
    """(GPT2LMHeadModel, the circuit planted in it: {class: [(layer, head), ...]} or None) for a planted spec."""
    from interp.planted import capitals, greater_than, ioi

    kind, seed, noise = parse_planted(spec)
    if kind == "ioi":
        return ioi.build(seed, noise), ioi_layout(seed)
    if kind == "greater-than":
        return greater_than.build(), {"end_heads": list(END_HEADS)}
    return capitals.build(), None


def planted_edges(spec: str) -> list[str] | None:
    """The edges of the circuit planted in a model (EAP-IG / MIB names), where they are known: planted:ioi[:SEED],
    planted:greater-than."""
    kind, seed, _ = parse_planted(spec)
    if kind == "ioi":
        return ioi_edges(seed)
    return greater_than_edges() if kind == "greater-than" else None


__all__ = [
    "build_planted",
    "greater_than_circuit",
    "greater_than_edges",
    "ioi_edges",
    "ioi_layout",
    "parse_planted",
    "planted_edges",
    "SPECS",
]
