"""Recovery: a dictionary trained here, with sparsify, on a planted model's activations finds the directions the
planted model writes.

    interp dictionaries recovery --model planted:ioi --hook blocks.0.hook_resid_pre

planted:ioi's residual stream is a sum of known directions (`interp.planted.ioi`): a name's embedding (its codes in
N and O, which always arrive together, and the flag f every name carries: a dictionary may fold f into each name or
learn it apart, and either form counts), another token's random embedding, each position's one-hot, and what the
heads before the hook write: R:name and the flag g after a name (previous-token heads), D:name and the flag r at a
repeated name (duplicate-token and induction heads). A TopK dictionary is trained at the hook on IOI prompts, one
after another in contexts of 64 (so that a template's words do not always sit at the same positions; BOS left
out); each direction that occurs at least 5 times is matched with the trained decoder row of largest cosine.
Reported: the share matched at cosine >= 0.9, per family; the headline share leaves out the other tokens' random
embeddings (not planted).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from interp.errors import InterpError
from interp.results import jsonable, provenance, write_json


def planted_recovery(
    model,
    hook: str,
    out: str | Path,
    n_tokens: int = 300_000,
    context: int = 64,
    expansion_factor: int = 2,
    k: int = 2,
    seed: int = 0,
    threshold: float = 0.9,
    quiet: bool = True,
    epochs: int = 1,
    auxk_alpha: float = 1 / 32,
    dead_after: int = 20_000,
    batch_size: int = 16,
) -> dict:
    """Train at `hook` on planted:ioi's activations (`epochs` passes over the prompts, each in a new order) and
    match its writes (see the module's docstring)."""
    from interp.dictionaries import Site, load_dictionary
    from interp.dictionaries.training import train_dictionaries
    from interp.task import PAD

    tokens = ioi_stream(model, n_tokens, context, seed)
    kept = tokens != PAD  # <|endoftext|>: each prompt's BOS
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
        auxk_alpha=auxk_alpha,
        dead_after=dead_after,
        batch_size=batch_size,
    )[0]
    trained = load_dictionary(folder)
    rows = torch.nn.functional.normalize(trained.W_dec, dim=-1)
    labels = list(writes)
    cosines = [
        max(float((torch.nn.functional.normalize(form, dim=-1) @ rows.T).max()) for form in writes[label])
        for label in labels
    ]
    families: dict[str, list[float]] = {}
    for label, cosine in zip(labels, cosines):
        families.setdefault(label.split(":")[0], []).append(cosine)
    share = lambda values: sum(v >= threshold for v in values) / len(values)  # noqa: E731
    planted = [cosine for label, cosine in zip(labels, cosines) if not label.startswith("word:")]
    return {
        "hook": hook,
        "context": context,
        "n_tokens": int(kept.sum()),
        "epochs": epochs,
        "dictionary": trained.describe(),
        "threshold": threshold,
        "n_directions": len(planted),
        "share_recovered": share(planted),
        "families": {
            name: {"n": len(values), "share_recovered": share(values), "median_cosine": float(np.median(values))}
            for name, values in sorted(families.items())
        },
        "directions": [{"label": label, "cosine": cosine} for label, cosine in zip(labels, cosines)],
    }


def planted_writes(model, tokens, positions, boundary: int, min_count: int = 5) -> dict[str, list[torch.Tensor]]:
    """planted:ioi's directions among these tokens (at these positions) that reach residual boundary `boundary`
    at least `min_count` times, each with the forms a dictionary may learn it in: "name:<name>" (a name's
    embedding, its codes in N and O and the flag f every name carries; or its codes alone, f split off),
    "word:<token>" (another token's random embedding), "flag:f", "pos:<p>" (the one-hot position), and what heads
    before the boundary write: "R:<name>" and "flag:g" (previous-token heads), "D:<name>" and "flag:r"
    (duplicate-token and induction heads; a name's count stands in for its repeats)."""
    from interp.planted.ioi import ioi_layout, ioi_residual

    spec = model.interp_source.spec
    if not spec.startswith("planted:ioi"):
        raise InterpError(f"recovery reads planted:ioi's writes, not {spec}'s")
    residual, names, codes = ioi_residual()
    layout = ioi_layout(parse_seed(spec))
    first_layer = lambda roles: min(layer for role in roles for layer, _ in layout[role])  # noqa: E731
    counts = torch.bincount(tokens.cpu(), minlength=model.cfg.d_vocab)
    name_index = {token: i for i, token in enumerate(names.tolist())}
    word = lambda token: model.tokenizer.decode([token]).strip()  # noqa: E731
    writes = {}
    frequent = torch.nonzero(counts >= min_count)[:, 0].tolist()
    for token in frequent:
        if token in name_index:
            name_codes = codes[name_index[token]] @ (residual["N"] + residual["O"]).T
            writes[f"name:{word(token)}"] = [name_codes + residual["f"][:, 0], name_codes]
        else:
            writes[f"word:{word(token)}"] = [model.W_E[token].detach().double().cpu()]
    if any(token in name_index for token in frequent):
        writes["flag:f"] = [residual["f"][:, 0]]
    position_counts = torch.bincount(positions.cpu())
    for position in torch.nonzero(position_counts >= min_count)[:, 0].tolist():
        writes[f"pos:{position}"] = [residual["P"][:, position]]
    frequent_names = [name_index[token] for token in frequent if token in name_index]
    for block, flag, roles in (("R", "g", ("previous_token",)), ("D", "r", ("duplicate_token", "induction"))):
        if 2 * first_layer(roles) + 1 > boundary:  # no head of those roles writes before the boundary
            continue
        writes[f"flag:{flag}"] = [residual[flag][:, 0]]
        for i in frequent_names:
            code = codes[i] @ residual[block].T
            writes[f"{block}:{word(int(names[i]))}"] = [code + residual[flag][:, 0], code]
    return {label: [form.to(model.W_E.device, torch.float32) for form in forms] for label, forms in writes.items()}


def ioi_stream(model, n_tokens: int, context: int, seed: int) -> torch.Tensor:
    """[n, context] tokens: IOI prompts (the task's clean prompts, each after its BOS) one after another, so that a
    word's position varies (one prompt per row would tie each template's words to their positions)."""
    from interp.task import PAD
    from interp.task_runs import load_task, prepare

    prompts = prepare(model, load_task("ioi", model, n_tokens // 14 + 1, seed)).tokens.clean
    # BOS and the padding are both <|endoftext|> (PAD): each prompt's words, after one BOS
    stream = torch.tensor([token for prompt in prompts.tolist() for token in [PAD, *(t for t in prompt if t != PAD)]])
    n_rows = len(stream) // context
    if n_rows == 0:
        raise InterpError(f"{n_tokens} tokens are fewer than one context of {context}")
    return stream[: n_rows * context].reshape(n_rows, context)


def parse_seed(spec: str) -> int | None:
    from interp.planted import parse_planted

    return parse_planted(spec)[1]


def add_recovery_arguments(parser) -> None:
    from interp.cli import add_model

    add_model(parser, default="planted:ioi")
    parser.add_argument("--hook", default="blocks.0.hook_resid_pre", help="where to train (default: resid_pre 0)")
    parser.add_argument("--tokens", type=int, default=300_000, help="training tokens (default 300,000)")
    parser.add_argument("--expansion-factor", type=int, default=2, help="features per dimension (default 2)")
    parser.add_argument("--k", type=int, default=2, help="active features per token (default 2: a token, its position)")
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
    found = planted_recovery(
        model,
        args.hook,
        out,
        args.tokens,
        expansion_factor=args.expansion_factor,
        k=args.k,
        seed=args.seed,
        quiet=args.quiet,
    )
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
