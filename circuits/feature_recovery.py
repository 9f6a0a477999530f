"""Recovery: a dictionary trained here, with sparsify, on a planted model's activations finds the planted
directions.

    interp dictionaries recovery --model planted:ioi --hook blocks.3.hook_resid_pre

The planted model's residual stream is a sum of known directions (`interp.planted.dictionaries`). A TopK
dictionary is trained at a hook on its activations over IOI prompts; each planted direction present there (the
exact planted dictionary reads it above 0.5 on at least 5 tokens) is matched with the trained decoder row of largest
cosine, and the share matched at cosine >= 0.9 is reported, per family of directions.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from interp.circuits.features import describe
from interp.errors import InterpError
from interp.results import jsonable, provenance, write_json


def planted_recovery(
    model,
    hook: str,
    out: str | Path,
    n_prompts: int = 2000,
    expansion_factor: int = 4,
    k: int = 16,
    seed: int = 0,
    threshold: float = 0.9,
    quiet: bool = True,
) -> dict:
    """Train a sparsify dictionary at `hook` on the planted model's activations over IOI prompts (padding left
    out), then match each planted direction present in those activations (the exact planted dictionary reads it
    above 0.5 on at least 5 tokens) with the trained decoder row of largest cosine. The share of directions matched
    at cosine >= `threshold`, per family (the blocks N, R, D, ...; flags; positions)."""
    from interp.dictionaries import load_dictionary
    from interp.dictionaries.training import activations_at, train_dictionaries
    from interp.planted.dictionaries import planted_dictionary
    from interp.task import PAD
    from interp.task_runs import load_task, prepare

    spec = model.interp_source.spec
    tokens = prepare(model, load_task("ioi", model, n_prompts, seed)).tokens.clean
    exact = planted_dictionary(spec, hook).to(model.cfg.device)
    kept = tokens != PAD
    kept[:, 0] = False  # BOS
    with torch.inference_mode():
        active = (exact.encode(activations_at(model, tokens, hook, exact.convention)[kept]) > 0.5).sum(0)
    labels = exact.labels
    present = [i for i in range(exact.d_sae) if active[i] >= 5 and not labels[i].lstrip("-").startswith("other:")]
    folder = train_dictionaries(
        model,
        [hook],
        Path(out) / "dictionary",
        tokens=tokens,
        expansion_factor=expansion_factor,
        k=k,
        seed=seed,
        quiet=quiet,
        exclude_tokens=[PAD],
    )[0]
    trained = load_dictionary(folder)
    rows = torch.nn.functional.normalize(trained.W_dec.to(exact.W_dec.device), dim=-1)
    planted = torch.nn.functional.normalize(exact.W_dec[present], dim=-1)
    cosines = (planted @ rows.T).max(-1).values.cpu()
    families: dict[str, list[float]] = {}
    for index, cosine in zip(present, cosines.tolist()):
        label = labels[index].lstrip("-")
        family = label.split(":")[0] if ":" in label else ("P" if re.fullmatch(r"P\d+", label) else label)
        families.setdefault(family, []).append(cosine)
    share = lambda values: sum(v >= threshold for v in values) / len(values)  # noqa: E731
    return {
        "hook": hook,
        "n_prompts": n_prompts,
        "n_tokens": int(kept.sum()),
        "dictionary": describe(trained),
        "threshold": threshold,
        "n_directions": len(present),
        "share_recovered": share(cosines.tolist()),
        "families": {
            name: {"n": len(values), "share_recovered": share(values), "median_cosine": float(np.median(values))}
            for name, values in sorted(families.items())
        },
        "directions": [{"label": labels[i], "cosine": c} for i, c in zip(present, cosines.tolist())],
    }


def add_recovery_arguments(parser) -> None:
    from interp.cli import add_model

    add_model(parser, default="planted:ioi")
    parser.add_argument("--hook", default="blocks.3.hook_resid_pre", help="where to train (default: resid_pre 3)")
    parser.add_argument("--n", type=int, default=4000, help="IOI prompts to train on (default 4000)")
    parser.add_argument("--expansion-factor", type=int, default=4, help="features per dimension (default 4)")
    parser.add_argument("--k", type=int, default=16, help="active features per token (default 16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="output directory (default results/features/recovery/<model>/)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_recovery(args) -> None:
    from interp.cli import load
    from interp.results import default_out_dir

    model = load(args)
    if not model.interp_source.spec.startswith(("planted:ioi", "planted:capitals")):
        raise InterpError("recovery needs a planted model with planted dictionaries (planted:ioi, planted:capitals)")
    out = Path(args.out or default_out_dir("features/recovery", args.model))
    if (out / "dictionary").exists():
        raise InterpError(f"{out / 'dictionary'} exists: remove it or give another --out")
    found = planted_recovery(model, args.hook, out, args.n, args.expansion_factor, args.k, args.seed, quiet=args.quiet)
    data = jsonable({**provenance(model, args.seed), "recovery": found})
    write_json(out / "results.json", data)
    print(
        f"{found['dictionary']['d_sae']} features trained at {args.hook} of {args.model} on {found['n_tokens']} "
        f"tokens: {found['share_recovered']:.3f} of {found['n_directions']} planted directions at cosine >= "
        f"{found['threshold']}"
    )
    for family, row in found["families"].items():
        print(f"  {family:>10}: {row['share_recovered']:.3f} of {row['n']} (median cosine {row['median_cosine']:.3f})")
    print(f"results: {out / 'results.json'}")
