"""The dictionary commands: `interp features`, `interp dictionaries train | quality | attribute`."""

from __future__ import annotations

import json
from pathlib import Path

from interp.cli import Parser, add_model, add_prepend_bos, load
from interp.errors import InterpError

DICTIONARY_HELP = (
    "a dictionary folder (SAE Lens or sparsify), a folder of them, an SAE Lens release/sae_id (from the Hugging "
    "Face cache offline), organism:RUN[/HOOK] (the organism's shipped saes, transcoders), or planted:HOOK with a "
    "planted model"
)


def one_dictionary(args, model):
    from interp.dictionaries.formats import load_dictionaries

    found = load_dictionaries(args.dictionary, model, model.cfg.device)
    if len(found) != 1:
        raise InterpError(f"{args.dictionary} holds {len(found)} dictionaries: name one (FOLDER/HOOK)")
    return found[0]


def features_json(model, dictionary, tokens, values, ids) -> dict:
    positions = []
    for position, token in enumerate(tokens.tolist()):
        active = [[int(i), float(v)] for v, i in zip(values[0, position].tolist(), ids[0, position].tolist()) if v > 0]
        positions.append({"position": position, "token": model.tokenizer.decode([token]), "features": active})
    data = {"dictionary": dictionary.describe(), "positions": positions}
    if dictionary.labels is not None:
        used = sorted({i for entry in positions for i, _ in entry["features"]})
        data["feature_labels"] = {str(i): dictionary.labels[i] for i in used}
    return data


def cmd_features(args) -> None:
    """Each position's strongest features of one prompt, as `interp lens` shows each layer's top tokens."""
    import torch

    from interp.dictionaries.splice import FeatureSelection, run_spliced, splice_for
    from interp.engine import Transformer
    from interp.tokens import prompt_tokens

    if args.top_k < 1:
        raise InterpError(f"--top-k must be at least 1, not {args.top_k}")
    model = load(args)
    dictionary = one_dictionary(args, model)
    tokens = prompt_tokens(model, args.prompt, prepend_bos=args.prepend_bos)
    splice = splice_for(model, tokens, [dictionary], select=FeatureSelection(top_k=args.top_k))
    with torch.inference_mode():
        run_spliced(Transformer(model), tokens, splice)
    values, ids = splice.kept[0]
    found = features_json(model, dictionary, tokens[0], values, ids)
    data = {"model": args.model, "prepend_bos": args.prepend_bos, **found}
    if args.json:
        print(json.dumps(data))
        return
    print(f"{args.model}, {dictionary.label()} ({dictionary.d_sae} features): {args.prompt!r}")
    labels = data.get("feature_labels", {})
    for entry in data["positions"]:
        shown = "  ".join(f"{labels.get(str(i), i)} {v:.3g}" for i, v in entry["features"]) or "(none active)"
        print(f"{entry['position']:>4} {entry['token']!r:>14}: {shown}")


def cmd_train(args) -> None:
    from interp.dictionaries.training import train_dictionaries

    model = load(args)
    hooks = args.hook or default_hooks(model, args.transcoders)
    folders = train_dictionaries(
        model,
        hooks,
        args.out,
        transcode=args.transcoders,
        n_tokens=args.tokens,
        context=args.context,
        batch_size=args.batch_size,
        expansion_factor=args.expansion_factor,
        k=args.k,
        seed=args.seed,
        text=args.text,
        quiet=args.quiet,
        lr=args.lr,
        max_memory=None if args.max_memory is None else int(args.max_memory * 2**20),
    )
    if not args.quiet:
        print("\n".join(str(folder) for folder in folders))


def default_hooks(model, transcoders: bool) -> list[str]:
    """Every layer: its MLP for transcoders, its residual stream before the layer (and after the last) for
    autoencoders."""
    n_layers = model.cfg.n_layers
    if transcoders:
        return [f"blocks.{layer}.hook_mlp_out" for layer in range(n_layers)]
    return [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)] + [f"blocks.{n_layers - 1}.hook_resid_post"]


def cmd_quality(args) -> None:
    from interp.dictionaries.formats import load_dictionaries
    from interp.dictionaries.quality import reconstruction_quality
    from interp.dictionaries.training import training_tokens
    from interp.results import jsonable, provenance, write_json

    model = load(args)
    dictionaries = load_dictionaries(args.dictionary, model, model.cfg.device)
    tokens = training_tokens(model, args.tokens, args.context, args.seed, args.text)
    rows = {d.label(): reconstruction_quality(model, d, tokens).as_dict() for d in dictionaries}
    data = jsonable({**provenance(model, args.seed), "dictionaries": rows, "tokens": tokens.tolist()})
    if args.out:
        write_json(Path(args.out) / "quality.json", data)
    if args.json:
        print(json.dumps({key: value for key, value in data.items() if key != "tokens"}))
        return
    print(f"{'dictionary':>44} {'FVE':>6} {'L0':>6} {'dead':>9} {'CE clean':>9} {'spliced':>8} {'zero':>8} {'rec.':>6}")
    for label, q in rows.items():
        dead = f"{q['dead_features']}/{q['d_sae']}"
        losses = f"{q['loss_clean']:9.3f} {q['loss_spliced']:8.3f} {q['loss_zero_ablated']:8.3f}"
        fve, recovered = q["fraction_variance_explained"], q["loss_recovered"]
        print(f"{label:>44} {fve:6.3f} {q['l0']:6.1f} {dead:>9} {losses} {recovered:6.3f}")


def add_commands(commands) -> None:
    features = commands.add_parser("features", help="each position's strongest dictionary features of a prompt")
    features.add_argument("prompt")
    add_model(features)
    features.add_argument("--dictionary", required=True, metavar="PATH", help=DICTIONARY_HELP)
    features.add_argument("--top-k", type=int, default=5, help="features shown per position (default 5)")
    add_prepend_bos(features)
    features.add_argument("--json", action="store_true", help="print one JSON object")
    features.set_defaults(run=cmd_features)

    dictionaries = commands.add_parser("dictionaries", help="train and measure sparse dictionaries (SAEs, transcoders)")
    sub = dictionaries.add_subparsers(dest="dictionaries_command", required=True, parser_class=Parser)
    train = sub.add_parser("train", help="train SAEs or transcoders with sparsify on the model's activations")
    add_model(train)
    train.add_argument(
        "--hook",
        action="append",
        help="a hook to train at (repeat; default: every blocks.L.hook_resid_pre and the last resid_post, or every "
        "blocks.L.hook_mlp_out with --transcoders)",
    )
    train.add_argument("--transcoders", action="store_true", help="transcoders of the MLPs instead of autoencoders")
    train.add_argument("--out", required=True, help="directory for the run (one sparsify folder per hook)")
    train.add_argument("--tokens", type=int, default=2_000_000, help="training tokens (default 2,000,000)")
    train.add_argument("--context", type=int, default=64, help="tokens per sequence (default 64)")
    train.add_argument("--batch-size", type=int, default=16, help="sequences per step (default 16)")
    train.add_argument("--expansion-factor", type=int, default=4, help="features per input dimension (default 4)")
    train.add_argument("--k", type=int, default=16, help="active features per token, TopK (default 16)")
    train.add_argument(
        "--lr",
        type=float,
        default=3e-3,
        help="learning rate of sparsify's signum optimiser (default 3e-3; sparsify's "
        "own default, 5e-3 / sqrt(features / 2^14), is tuned for wide models and diverged on the organism)",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--text", help="a text file to train on (default: the organism's corpus generator, seeded)")
    train.add_argument(
        "--max-memory", type=float, metavar="MIB", help="memory budget in MiB: refused before training when over"
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(run=cmd_train)

    quality = sub.add_parser("quality", help="reconstruction quality (SAE Lens's basic metrics)")
    add_model(quality)
    quality.add_argument("--dictionary", required=True, metavar="PATH", help=DICTIONARY_HELP)
    quality.add_argument("--tokens", type=int, default=16_384, help="evaluation tokens (default 16,384)")
    quality.add_argument("--context", type=int, default=64, help="tokens per sequence (default 64)")
    quality.add_argument("--seed", type=int, default=1, help="seed of the evaluation text (default 1: not training's)")
    quality.add_argument("--text", help="a text file to measure on (default: the organism's corpus generator)")
    quality.add_argument("--json", action="store_true", help="print one JSON object")
    quality.add_argument("--out", help="directory for quality.json (with the tokens measured)")
    quality.set_defaults(run=cmd_quality)

    from interp.circuits import feature_recovery, feature_vector
    from interp.circuits import features as circuit

    attribute = sub.add_parser(
        "attribute", help="feature circuit of a task (Marks et al.): attribution, exact patching, edges, figures"
    )
    circuit.add_attribute_arguments(attribute)
    attribute.set_defaults(run=circuit.run_attribute)
    vector = sub.add_parser("vector", help="what a capital-city MLP writes, in features")
    feature_vector.add_vector_arguments(vector)
    vector.set_defaults(run=feature_vector.run_vector)
    recovery = sub.add_parser(
        "recovery", help="train on a planted model's activations; how many planted directions the dictionary finds"
    )
    feature_recovery.add_recovery_arguments(recovery)
    recovery.set_defaults(run=feature_recovery.run_recovery)
