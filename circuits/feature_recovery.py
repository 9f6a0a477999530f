"""Recovery: a dictionary trained here, with sparsify, on a planted model's activations finds the directions the
planted model writes.

    interp dictionaries recovery --model planted:ioi --hook blocks.3.hook_resid_pre

planted:ioi's residual stream is a sum of known writes (`interp.planted.ioi`): each token's embedding (a name's is
its code in N and in O plus the flag f; another word's a random direction of its own), each position's vector (its
one-hot P and the ramp; the constant, which every position carries, is left out), and what the heads before the
hook write: R:name + g after a name (previous-token heads), D:name + r at a repeated name (duplicate-token and
induction heads). Directions that always arrive together (a name's N and O codes and f) are one write: no
dictionary can tell them apart, so they are matched as one. A TopK dictionary is trained at the hook on IOI
prompts (padding and BOS left out); each write that occurs at least 5 times is matched with the trained decoder
row of largest cosine, and the share matched at cosine >= 0.9 is reported, per family.
"""

from __future__ import annotations

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
    n_prompts: int = 4000,
    expansion_factor: int = 4,
    k: int = 16,
    seed: int = 0,
    threshold: float = 0.9,
    quiet: bool = True,
    epochs: int = 1,
) -> dict:
    """Train at `hook` on planted:ioi's activations (`epochs` passes over the prompts, each in a new order) and
    match its writes (see the module's docstring)."""
    from interp.dictionaries import Site, load_dictionary
    from interp.dictionaries.training import train_dictionaries
    from interp.task import PAD
    from interp.task_runs import load_task, prepare

    tokens = prepare(model, load_task("ioi", model, n_prompts, seed)).tokens.clean
    kept = tokens != PAD
    kept[:, 0] = False  # BOS
    writes = planted_writes(model, tokens[kept], torch.nonzero(kept)[:, 1], Site.parse(hook).boundary)
    folder = train_dictionaries(
        model,
        [hook],
        Path(out) / "dictionary",
        tokens=tokens.repeat(epochs, 1),
        expansion_factor=expansion_factor,
        k=k,
        seed=seed,
        quiet=quiet,
        exclude_tokens=[PAD],
    )[0]
    trained = load_dictionary(folder)
    rows = torch.nn.functional.normalize(trained.W_dec, dim=-1)
    labels = list(writes)
    directions = torch.nn.functional.normalize(torch.stack([writes[label] for label in labels]).float(), dim=-1)
    cosines = (directions @ rows.T).max(-1).values.tolist()
    families: dict[str, list[float]] = {}
    for label, cosine in zip(labels, cosines):
        families.setdefault(label.split(":")[0], []).append(cosine)
    share = lambda values: sum(v >= threshold for v in values) / len(values)  # noqa: E731
    return {
        "hook": hook,
        "n_prompts": n_prompts,
        "n_tokens": int(kept.sum()),
        "epochs": epochs,
        "dictionary": describe(trained),
        "threshold": threshold,
        "n_directions": len(labels),
        "share_recovered": share(cosines),
        "families": {
            name: {"n": len(values), "share_recovered": share(values), "median_cosine": float(np.median(values))}
            for name, values in sorted(families.items())
        },
        "directions": [{"label": label, "cosine": cosine} for label, cosine in zip(labels, cosines)],
    }


def planted_writes(model, tokens, positions, boundary: int, min_count: int = 5) -> dict[str, torch.Tensor]:
    """planted:ioi's writes that occur at least `min_count` times among these tokens (at these positions) and
    reach residual boundary `boundary`: "embed:<token>", "pos:<p>", "R:<name>" (R code + g), "D:<name>" (D code +
    r; a name counts as repeated where it occurs a second time in its prompt, approximated by its count)."""
    from interp.planted.ioi import ioi_layout, ioi_residual

    spec = model.interp_source.spec
    if not spec.startswith("planted:ioi"):
        raise InterpError(f"recovery reads planted:ioi's writes, not {spec}'s")
    residual, names, codes = ioi_residual()
    constant = residual["constant"][:, 0].to(model.W_E.device, model.W_E.dtype)
    layout = ioi_layout(parse_seed(spec))
    first_layer = lambda roles: min(layer for role in roles for layer, _ in layout[role])  # noqa: E731
    counts = torch.bincount(tokens.cpu(), minlength=model.cfg.d_vocab)
    writes = {}
    for token in torch.nonzero(counts >= min_count)[:, 0].tolist():
        writes[f"embed:{model.tokenizer.decode([token]).strip()}"] = model.W_E[token].detach()
    position_counts = torch.bincount(positions.cpu())
    for position in torch.nonzero(position_counts >= min_count)[:, 0].tolist():
        vector = model.W_pos[position].detach()
        writes[f"pos:{position}"] = vector - (vector @ constant) / (constant @ constant) * constant
    frequent = [i for i, token in enumerate(names.tolist()) if counts[token] >= min_count]
    for block, flag, roles in (("R", "g", ("previous_token",)), ("D", "r", ("duplicate_token", "induction"))):
        if 2 * first_layer(roles) + 1 > boundary:  # no head of those roles writes before the hook
            continue
        written = (codes[frequent] @ residual[block].T + residual[flag][:, 0]).to(model.W_E.dtype)
        for row, i in zip(written, frequent):
            writes[f"{block}:{model.tokenizer.decode([int(names[i])]).strip()}"] = row.to(model.W_E.device)
    return writes


def parse_seed(spec: str) -> int | None:
    from interp.planted import parse_planted

    return parse_planted(spec)[1]


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
    if not model.interp_source.spec.startswith("planted:ioi"):
        raise InterpError("recovery reads planted:ioi's writes: --model planted:ioi[:SEED]")
    out = Path(args.out or default_out_dir("features/recovery", args.model))
    if (out / "dictionary").exists():
        raise InterpError(f"{out / 'dictionary'} exists: remove it or give another --out")
    found = planted_recovery(model, args.hook, out, args.n, args.expansion_factor, args.k, args.seed, quiet=args.quiet)
    data = jsonable({**provenance(model, args.seed), "recovery": found})
    write_json(out / "results.json", data)
    print(
        f"{found['dictionary']['d_sae']} features trained at {args.hook} of {args.model} on {found['n_tokens']} "
        f"tokens: {found['share_recovered']:.3f} of {found['n_directions']} planted writes at cosine >= "
        f"{found['threshold']}"
    )
    for family, row in found["families"].items():
        print(f"  {family:>10}: {row['share_recovered']:.3f} of {row['n']} (median cosine {row['median_cosine']:.3f})")
    print(f"results: {out / 'results.json'}")
