"""Feature-level patching and attribution (Marks et al. 2024, "Sparse Feature Circuits"), on the patching engine.

Nodes are each dictionary's features and its error term, at each position. With the error kept, patching a
feature from its base value to another is an exact change of the model: decode(f') - decode(f) added to the
dictionary's activation, a change of the residual stream at one boundary from the patched position on, which is
what the engine's patched runs compute (`interp.engine`), many at once.

Attribution estimates every node's patching effect at once, with Marks et al.'s integrated-gradients variant: for
each dictionary in turn, its nodes (f, e) are set to base + alpha (source - base) for alpha = 0, 1/steps, ...,
(steps - 1)/steps, the rest of the model left as it is; the metric's gradient with respect to them, averaged over
alpha, times (source - base) is each node's effect (an error node's summed over d_model). Edges between the nodes
of two dictionaries (upstream u, downstream d) are their gradient-times-delta through the model between them:
edge(a -> b) = (source_a - base_a) * d/du_a [grad_b . d_b], with grad_b the downstream node's averaged gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.dictionaries.dictionary import Dictionary
from interp.dictionaries.splice import Nodes, run_spliced, splice_for
from interp.engine import Cell, Transformer, evaluate_cells, row_budget, run_bytes
from interp.errors import InterpError
from interp.metric_reader import Reader
from interp.patching import setup


@dataclass
class Attribution:
    """Per dictionary: each feature's estimated effect [pos, d_sae] and the error's [pos], means over prompts (the
    change of the metric when that node alone goes from the base to the source run's value); the two runs' metric;
    with `per_prompt`, the effects before the mean ([prompt, pos, d_sae] and [prompt, pos])."""

    features: list[Float[Tensor, "pos d_sae"]]
    errors: list[Float[Tensor, " pos"]]
    base_value: float
    source_value: float
    per_prompt_features: list[Float[Tensor, "prompt pos d_sae"]] | None = None
    per_prompt_errors: list[Float[Tensor, "prompt pos"]] | None = None
    gradients: list[tuple[Tensor, Tensor]] | None = None  # per dictionary: the averaged gradients (f, e)


def node_runs(s, dictionaries: Sequence[Dictionary], model) -> tuple[list[Nodes], list[Nodes], float, float]:
    """Every dictionary's nodes on the base and on the source tokens, and the two runs' metric."""
    found = []
    for tokens in (s.base_tokens, s.source_tokens):
        splice = splice_for(model, tokens, dictionaries, keep_nodes=True)
        with torch.inference_mode():
            value = run_spliced(s.tf, tokens, splice, s.reader)
        found.append(([splice.nodes[i] for i in range(len(dictionaries))], float(value.mean())))
    (base, base_value), (source, source_value) = found
    return base, source, base_value, source_value


def attribute_features(
    model,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupt_tokens: Int[Tensor, "batch pos"],
    metric,
    dictionaries: Sequence[Dictionary],
    steps: int = 10,
    direction: str = "denoise",
    per_prompt: bool = False,
) -> Attribution:
    """Every feature's and error node's integrated-gradients attribution (see the module's docstring). The metric
    must be differentiable (a `Metric`, as for `interp.patching`); denoise patches clean values into the corrupted
    run, noise the other way."""
    if steps < 1:
        raise InterpError("steps must be at least 1")
    s = setup(model, clean_tokens, corrupt_tokens, metric, direction)
    base, source, base_value, source_value = node_runs(s, dictionaries, model)
    features, errors, gradients = [], [], []
    for index in range(len(dictionaries)):
        grad_f, grad_e = averaged_gradients(
            model, s.tf, s.reader, s.base_tokens, dictionaries, index, base, source, steps
        )
        gradients.append((grad_f, grad_e))
        delta_f = source[index].features - base[index].features
        delta_e = source[index].error - base[index].error
        features.append(pad_positions((grad_f * delta_f).transpose(0, 1), s.n_pos).transpose(0, 1))
        errors.append(pad_positions((grad_e * delta_e).sum(-1).T, s.n_pos).T)
    return Attribution(
        [effect.mean(0) for effect in features],
        [effect.mean(0) for effect in errors],
        base_value,
        source_value,
        features if per_prompt else None,
        errors if per_prompt else None,
        gradients if per_prompt else None,
    )


def pad_positions(x: Tensor, n_pos: int) -> Tensor:
    """Positions after the last one the metric reads were not computed: their effect is 0."""
    if x.shape[0] == n_pos:
        return x.detach()
    return torch.cat([x.detach(), x.new_zeros(n_pos - x.shape[0], *x.shape[1:])])


def averaged_gradients(
    model, tf, reader: Reader, tokens: Tensor, dictionaries, index: int, base, source, steps: int
) -> tuple[Tensor, Tensor]:
    """The metric's gradient with respect to dictionary `index`'s features and error, averaged over the
    interpolation steps from the base run's nodes to the source run's."""
    grad_f = torch.zeros_like(base[index].features)
    grad_e = torch.zeros_like(base[index].error)
    for step in range(steps):
        alpha = step / steps
        f = (base[index].features + alpha * (source[index].features - base[index].features)).requires_grad_()
        e = (base[index].error + alpha * (source[index].error - base[index].error)).requires_grad_()

        with torch.enable_grad():
            splice = splice_for(model, tokens, [dictionaries[index]], replace=lambda i, fs, es, f=f, e=e: (f, e))
            value = run_spliced(tf, tokens, splice, reader)
            g_f, g_e = torch.autograd.grad(value.sum(), (f, e), allow_unused=True)
        grad_f += 0 if g_f is None else g_f
        grad_e += 0 if g_e is None else g_e
    return grad_f / steps, grad_e / steps


def feature_edges(
    model,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupt_tokens: Int[Tensor, "batch pos"],
    metric,
    upstream: Dictionary,
    downstream: Dictionary,
    downstream_nodes: Sequence[tuple[int | str, int | Tensor]],
    steps: int = 10,
    direction: str = "denoise",
    gradients: tuple[Tensor, Tensor] | None = None,
) -> list[Float[Tensor, " d_sae_up_plus_error"]]:
    """Marks et al.'s edge effects from every upstream node (its features, then its error; summed over positions,
    mean over prompts) to each downstream node given as (feature id or "error", a position, or one per prompt):
    edge(a -> b) =
    (source_a - base_a) * d/du_a [grad_b . d_b], grad_b the metric's gradient with respect to b averaged over the
    interpolation (as for nodes; `gradients`: the downstream dictionary's, from `attribute_features`, instead of
    computing them again), through the model between the two dictionaries (see the module's docstring)."""
    if upstream.writes.boundary > downstream.writes.boundary or (
        upstream.writes.boundary == downstream.writes.boundary and upstream is downstream
    ):
        raise InterpError(f"{upstream.label()} is not upstream of {downstream.label()}")
    s = setup(model, clean_tokens, corrupt_tokens, metric, direction)
    pair = [upstream, downstream]
    base, source, _, _ = node_runs(s, pair, model)
    if gradients is None:
        gradients = averaged_gradients(model, s.tf, s.reader, s.base_tokens, pair, 1, base, source, steps)
    grad_f, grad_e = gradients
    f_up = base[0].features.clone().requires_grad_()
    e_up = base[0].error.clone().requires_grad_()
    delta_f, delta_e = source[0].features - base[0].features, source[0].error - base[0].error
    edges = []
    with torch.enable_grad():
        splice = splice_for(
            model, s.base_tokens, pair, keep_nodes=True, replace=lambda i, fs, es: (f_up, e_up) if i == 0 else (fs, es)
        )
        s.tf.run(s.base_tokens, s.reader, keep=(), edit=splice)
        down = splice.nodes[1]
        prompts = torch.arange(len(s.base_tokens), device=s.base_tokens.device)
        for feature, position in downstream_nodes:
            position = torch.as_tensor(position, device=prompts.device).expand(len(prompts))
            read = position < down.features.shape[1]  # past the last position the metric reads: no effect
            at, where = prompts[read], position[read]
            if feature == "error":
                target = (grad_e[at, where] * down.error[at, where]).sum()
            else:
                target = (grad_f[at, where, feature] * down.features[at, where, feature]).sum()
            g_f, g_e = torch.autograd.grad(target, (f_up, e_up), retain_graph=True, allow_unused=True)
            n_prompts = len(f_up)
            from_features = torch.zeros(upstream.d_sae) if g_f is None else (g_f * delta_f).sum((0, 1)) / n_prompts
            from_error = torch.zeros(()) if g_e is None else (g_e * delta_e).sum() / n_prompts
            edges.append(torch.cat([from_features, from_error[None]]).detach())
    return edges


# ----------------------------------------------------------------------------------------------------------------
# Exact patching of features


@dataclass(frozen=True)
class FeatureNode:
    """A dictionary's feature (or its error, feature="error") at a position (an int for every prompt, or one per
    prompt)."""

    dictionary: int
    feature: int | str
    position: int | tuple[int, ...]


def delta_state(tf: Transformer, dictionary: Dictionary, nodes: Nodes, new: Nodes) -> Tensor:
    """The change of the residual stream at the dictionary's boundary when its nodes go from `nodes` to `new`."""
    change = dictionary.decode(new.features, nodes.input) + new.error
    change = change - dictionary.decode(nodes.features, nodes.input) - nodes.error
    if dictionary.writes.kind == "z":  # heads' outputs -> attention's output
        W_O = tf.layers[dictionary.writes.layer].W_O
        change = change @ W_O.reshape(-1, W_O.shape[-1])
    return change


def with_node(nodes: Nodes, node: FeatureNode, value_from: Nodes | None, prompts: Tensor, positions: Tensor) -> Nodes:
    """`nodes` with one node set to its value in `value_from` (None: zero) in these prompts, at their positions."""
    features, error = nodes.features.clone(), nodes.error.clone()
    if node.feature == "error":
        error[prompts, positions] = 0 if value_from is None else value_from.error[prompts, positions]
    else:
        features[prompts, positions, node.feature] = (
            0 if value_from is None else value_from.features[prompts, positions, node.feature]
        )
    return Nodes(features, error, nodes.input)


def patch_features(
    model,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupt_tokens: Int[Tensor, "batch pos"],
    metric,
    dictionaries: Sequence[Dictionary],
    nodes: Sequence[FeatureNode],
    direction: str = "denoise",
    ablate: bool = False,
    max_memory: int | None = None,
) -> tuple[Float[Tensor, " n_nodes *prompt"], Float[Tensor, " *prompt"]]:
    """(the metric with each node in turn patched to its source-run value, or zero-ablated with `ablate`; the base
    run's metric): exact, the rest of the model (every other dictionary's error included) computed as it is."""
    s = setup(model, clean_tokens, corrupt_tokens, metric, direction)
    n_batch, n_computed = s.base_tokens.shape
    base_splice = splice_for(model, s.base_tokens, dictionaries, keep_nodes=True)
    source_splice = splice_for(model, s.source_tokens, dictionaries, keep_nodes=True)
    itemsize = s.tf.W_E.element_size()
    fixed = run_bytes(s.tf, n_batch, n_computed, ["resid", "k", "v"], itemsize)
    max_rows = row_budget(s.tf, s.reader, n_batch, n_computed, fixed, max_memory, itemsize)
    with torch.inference_mode():
        base = s.tf.run(s.base_tokens, s.reader, ["resid", "k", "v"], edit=base_splice)
        run_spliced(s.tf, s.source_tokens, source_splice, s.reader)
        cells = []
        for row, node in enumerate(nodes):
            if not 0 <= node.dictionary < len(dictionaries):
                raise InterpError(f"node {node}: there are {len(dictionaries)} dictionaries")
            dictionary = dictionaries[node.dictionary]
            if node.feature != "error" and not 0 <= node.feature < dictionary.d_sae:
                raise InterpError(f"node {node}: {dictionary.who} has {dictionary.d_sae} features")
            positions = torch.as_tensor(node.position, device=s.base_tokens.device).expand(n_batch)
            # A prompt's node after the last position the metric reads changes nothing: it is left as it is.
            prompts = torch.nonzero(positions < n_computed)[:, 0]
            positions = positions[prompts]
            start = int(positions.min()) if len(prompts) else n_computed

            def make(rows, node=node, dictionary=dictionary, prompts=prompts, positions=positions, start=start):
                own = base_splice.nodes[node.dictionary]
                source = None if ablate else source_splice.nodes[node.dictionary]
                new = with_node(own, node, source, prompts, positions)
                resid = base.resid[dictionary.writes.boundary]
                return (resid + delta_state(s.tf, dictionary, own, new))[None, :, start:]

            cells.append(Cell(dictionary.writes.boundary, start, [row], make))
        values = evaluate_cells(s.tf, base, s.reader, cells, len(nodes), max_rows)
    return values, base.value


def steer_features(
    model,
    tokens: Int[Tensor, "batch pos"],
    dictionaries: Sequence[Dictionary],
    settings: dict[FeatureNode, float],
    add: bool = False,
) -> Float[Tensor, "batch pos vocab"]:
    """The logits with chosen features set to (or, `add`, increased by) given activations at given positions, the
    error kept (the rest of the model as it is)."""
    tokens = torch.as_tensor(tokens, dtype=torch.long, device=model.cfg.device)
    tokens = tokens[None] if tokens.ndim == 1 else tokens

    def replace(index, features, error):
        features = features.clone()
        for node, value in settings.items():
            if node.dictionary == index:
                if node.feature == "error":
                    raise InterpError("steering sets features, not the error")
                current = features[:, node.position, node.feature]
                features[:, node.position, node.feature] = current + value if add else value
        return features, error

    with torch.inference_mode():
        return run_spliced(Transformer(model), tokens, splice_for(model, tokens, dictionaries, replace=replace))
