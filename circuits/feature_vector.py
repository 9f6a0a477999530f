"""What a capital-city MLP writes, in features (Merullo et al.'s FFN vector, read by a dictionary).

    interp dictionaries vector --model planted:capitals                  (MLP 19's output at the last position)

On the capital questions, the MLP's output at the last position, encoded by a dictionary at that MLP's output (or
a transcoder of it): each feature's mean activation, its share of the output, and its direct effect on
logit(capital) - logit(country) through the unembedding (the final LayerNorm's scale at that position applied),
with bootstrap intervals over the questions; the error's share of the output beside them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from interp.circuits.features import write_results
from interp.dictionaries.dictionary import Dictionary
from interp.errors import InterpError
from interp.stats import Bootstrap
from interp.task_runs import mean_with_interval


def mlp_vector(model, dictionary: Dictionary, n: int = 50, seed: int = 0, top: int = 15) -> dict:
    """The capital questions' MLP output at the last position in the dictionary's features (see the docstring)."""
    from interp.data.capitals import task_items
    from interp.dictionaries.splice import splice_for
    from interp.engine import Transformer
    from interp.metric_reader import Reader
    from interp.tokens import first_token_id, prompt_ids

    if dictionary.writes.kind != "mlp_out":
        raise InterpError(f"{dictionary.label()} does not read an MLP's output (blocks.L.hook_mlp_out)")
    items = task_items("capitals", None, seed)[:n]
    tf = Transformer(model)
    activations, shares, logit_effects, error_shares = [], [], [], []
    W_U = tf.W_U
    for item in items:
        tokens = torch.tensor([prompt_ids(item.prompt, model.tokenizer, prepend_bos=False)], device=model.cfg.device)
        splice = splice_for(model, tokens, [dictionary], keep_nodes=True)
        last = Reader(torch.tensor([[tokens.shape[1] - 1]], device=tokens.device), None, lambda logits: logits.sum())
        with torch.inference_mode():
            final = tf.run(tokens, last, keep=("resid",), edit=splice).resid[-1][0, -1]
            nodes = splice.nodes[0]
            f = nodes.features[0, -1]
            output = dictionary.decode(nodes.features, nodes.input)[0, -1] + nodes.error[0, -1]
            final = float(torch.sqrt((final - final.mean()).square().mean() + tf.eps))  # the final LayerNorm's scale
            capital, country = (first_token_id(" " + word, model.tokenizer) for word in (item.answer, item.argument))
            direction = (W_U[:, capital] - W_U[:, country]) / final
            contributions = f[:, None] * dictionary.W_dec  # [d_sae, d_model]
            activations.append(f.cpu())
            shares.append((contributions @ output / output.square().sum()).cpu())
            logit_effects.append((contributions @ direction).cpu())
            error_shares.append(float(nodes.error[0, -1] @ output / output.square().sum()))
    activations, shares, logit_effects = (torch.stack(x) for x in (activations, shares, logit_effects))
    order = logit_effects.mean(0).abs().topk(min(top, dictionary.d_sae)).indices.tolist()
    bootstrap = Bootstrap.over([0] * len(items), 1000, seed)
    return {
        "dictionary": dictionary.describe(),
        "n_prompts": len(items),
        "countries": [item.argument for item in items],
        "error_share": mean_with_interval(torch.tensor(error_shares), bootstrap),
        "features": [
            {
                "feature": feature,
                "label": dictionary.feature_label(feature),
                "activation": mean_with_interval(activations[:, feature], bootstrap),
                "share_of_output": mean_with_interval(shares[:, feature], bootstrap),
                "logit_effect": mean_with_interval(logit_effects[:, feature], bootstrap),
                "active_on": float((activations[:, feature] > 0).float().mean()),
            }
            for feature in order
        ],
    }


def vector_figure(data: dict, out_dir: str | Path) -> list[Path]:
    import matplotlib.pyplot as plt

    from interp.plotting import save_figure

    features = data["vector"]["features"]
    y = np.arange(len(features))
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(features) + 1.2))
    means = [f["logit_effect"]["mean"] for f in features]
    errors = None
    if all("ci" in f["logit_effect"] for f in features):
        errors = np.abs(np.array([f["logit_effect"]["ci"] for f in features]).T - np.array(means))
    ax.barh(y, means, xerr=errors, color="#d95f02", error_kw={"linewidth": 0.6})
    ax.set_yticks(y, [str(f["label"]) for f in features], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set(
        xlabel="direct effect on logit(capital) - logit(country)",
        title=f"{data['vector']['dictionary']['hook']} on {data['model']}: the capital vector in features",
    )
    return save_figure(fig, out_dir, "capital_vector_features")


def add_vector_arguments(parser) -> None:
    from interp.cli import add_model
    from interp.dictionaries.cli import DICTIONARY_HELP

    add_model(parser)
    parser.add_argument(
        "--dictionary",
        metavar="PATH",
        help=f"{DICTIONARY_HELP}; one at an MLP's output (default: the planted one at MLP 19 of planted:capitals, "
        "the organism's transcoder of its last MLP)",
    )
    parser.add_argument("--n", type=int, default=50, help="capital questions (default 50)")
    parser.add_argument("--top", type=int, default=15, help="features reported (default 15)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="output directory (default results/features/capitals/<model>/)")


def run_vector(args) -> None:
    from interp.cli import load
    from interp.dictionaries.cli import one_dictionary
    from interp.planted.dictionaries import planted_dictionary
    from interp.results import default_out_dir

    if args.n < 1 or args.top < 1:
        raise InterpError("--n and --top must be at least 1")
    model = load(args)
    spec = model.interp_source.spec
    if args.dictionary:
        dictionary = one_dictionary(args, model)
    elif spec == "planted:capitals":
        dictionary = planted_dictionary(spec, "blocks.19.hook_mlp_out").to(model.cfg.device)
    elif spec == "organism":
        args.dictionary = f"organism:transcoders/blocks.{model.cfg.n_layers - 1}.hook_mlp_out"
        dictionary = one_dictionary(args, model)
    else:
        raise InterpError(f"give a dictionary at an MLP's output of {spec} (--dictionary)")
    data = {"vector": mlp_vector(model, dictionary, args.n, args.seed, args.top)}
    out = args.out or default_out_dir("features/capitals", args.model)
    data = write_results(model, out, data, args.seed)
    vector = data["vector"]
    print(
        f"{dictionary.label()} on {args.model}, {vector['n_prompts']} capital questions: the error carries "
        f"{vector['error_share']['mean']:.3f} of the output; features by direct effect on logit(capital) - "
        "logit(country):"
    )
    for feature in vector["features"][:10]:
        print(
            f"  {str(feature['label']):>20} activation {feature['activation']['mean']:8.3f}  share "
            f"{feature['share_of_output']['mean']:+.3f}  logit effect {feature['logit_effect']['mean']:+.3f}"
        )
    print(f"results: {Path(out) / 'results.json'}")
