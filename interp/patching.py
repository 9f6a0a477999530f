"""Exact activation patching and path patching.

Activation patching runs the model on one input (the *base* run) with one activation replaced by its value on
another input (the *source* run) and reads a metric of the logits. Denoising (the default) patches clean
activations into the corrupted run; noising patches corrupted activations into the clean run. A sweep patches
every layer x position (x head) in turn and returns the grid of patched metric values.

Every patch, whatever its site, is a change of the residual stream at one layer *boundary* from some position on:
- resid_pre / resid_mid / resid_post: the residual itself;
- attn_out / mlp_out: base residual + (source - base) of that output;
- head_out (z), q, k, v, pattern: the head's output recomputed with the patched input, the change times W_O
  added at resid_mid.
So one engine (`interp.engine`) runs every site, exactly and computing only what changes; it is written out over
the bridge's processed weights, so no hook is ever attached to the model. Tests check it against TransformerLens's
own `patching.get_act_patch_*` helpers run on the same bridge.

Shapes: `batch` prompts of `pos` tokens; grids are [layer, pos] for residual sites, [layer, head] for head sites
over all positions, [layer, pos, head] for head sites by position (for `pattern`, pos is the query position).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.ablation import check_head
from interp.engine import (
    Cell,
    Run,
    Transformer,
    attend,
    check_tokens,
    chunks,
    evaluate_cells,
    mix_values,
    row_budget,
    run_bytes,
    take_positions,
)
from interp.errors import InterpError
from interp.metric_reader import Metric, Reader, logit_diff_metric, make_reader
from interp.workers import Workers, fill_in

__all__ = ["Metric", "activation_patch", "logit_diff_metric", "path_patch", "patch_grid_for_cli"]

RESIDUAL_SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
HEAD_SITES = ("head_out", "q", "k", "v", "pattern")
SITES = RESIDUAL_SITES + HEAD_SITES
DIRECTIONS = ("denoise", "noise")
RECEIVER_INPUTS = ("q", "k", "v")
# The activation each site's patch replaces, as a field of `Run` (resid_* pick their boundary of `Run.resid`).
SITE_FIELD = {
    "resid_pre": "resid",
    "resid_mid": "resid",
    "resid_post": "resid",
    "attn_out": "attn_out",
    "mlp_out": "mlp_out",
    "head_out": "z",
    "q": "q",
    "k": "k",
    "v": "v",
    "pattern": "pattern",
}


def check_site(site: str, direction: str, by_position: bool | None) -> bool:
    """by_position resolved: residual sites default to by position, head sites to all positions."""
    if site not in SITES:
        raise InterpError(f"unknown patching site {site!r}; use one of {', '.join(SITES)}")
    if direction not in DIRECTIONS:
        raise InterpError(
            f"unknown direction {direction!r}; use 'denoise' (clean into corrupt) or 'noise' (corrupt into clean)"
        )
    return site in RESIDUAL_SITES if by_position is None else bool(by_position)


def grid_shape(site: str, by_position: bool, n_layers: int, n_pos: int, n_heads: int) -> tuple[int, ...]:
    if site in RESIDUAL_SITES:
        return (n_layers, n_pos) if by_position else (n_layers,)
    return (n_layers, n_pos, n_heads) if by_position else (n_layers, n_heads)


def site_activations(site: str) -> tuple[list[str], list[str]]:
    """(base run fields, source run fields) a site's patches need. The base always keeps its residual, keys and
    values, which patched runs start from and attend to; head sites recompute heads' outputs from the base's."""
    field = SITE_FIELD[site]
    base = (
        {"resid", "k", "v", field} | ({"z"} if site in HEAD_SITES else set()) | ({"q"} if site in ("k", "v") else set())
    )
    return sorted(base), [field]


def residual_site(
    site: str, layer: int, base: Run, source: Run
) -> tuple[int, Float[Tensor, "batch pos d_model"], Float[Tensor, "batch pos d_model"]]:
    """(boundary it changes, source activation, base activation) of a residual-stream site at a layer."""
    if site in ("resid_pre", "resid_mid", "resid_post"):
        boundary = 2 * layer + ("resid_pre", "resid_mid", "resid_post").index(site)
        return boundary, source.resid[boundary], base.resid[boundary]
    if site == "attn_out":
        return 2 * layer + 1, source.attn_out[layer], base.attn_out[layer]
    return 2 * layer + 2, source.mlp_out[layer], base.mlp_out[layer]


def patched_z(site: str, layer: int, base: Run, source: Run, patched: Tensor) -> Float[Tensor, "batch pos head d_head"]:
    """Every head's output at `layer` when that head's `site` takes the source value at the `patched` positions
    (a [pos] mask; query positions for q and pattern, key positions for k and v). Heads are independent within a
    layer, so one computation serves every head."""
    at_positions = patched[:, None, None]  # [pos, head, d_head]
    if site == "head_out":
        return torch.where(at_positions, source.z[layer], base.z[layer])
    if site == "pattern":
        return mix_values(torch.where(patched[:, None], source.pattern[layer], base.pattern[layer]), base.v[layer])
    q, k, v = (
        torch.where(at_positions, getattr(source, name)[layer], getattr(base, name)[layer])
        if name == site
        else getattr(base, name)[layer]
        for name in ("q", "k", "v")
    )
    return attend(q, k, v, torch.arange(q.shape[1], device=q.device))[0]


def site_cells(tf: Transformer, site: str, by_position: bool, base: Run, source: Run, n_pos: int) -> list[Cell]:
    """One cell per (layer[, position]): a single row for residual sites, one row per head for head sites."""
    cells = []
    positions = range(n_pos) if by_position else [None]
    for layer in range(tf.n_layers):
        for column, position in enumerate(positions):
            start = position or 0
            if site in RESIDUAL_SITES:
                boundary, source_activation, base_activation = residual_site(site, layer, base, source)

                def make(
                    rows,
                    boundary=boundary,
                    source_activation=source_activation,
                    base_activation=base_activation,
                    position=position,
                ):
                    if position is None:
                        return (base.resid[boundary] + source_activation - base_activation)[None]
                    state = base.resid[boundary][None, :, position:].clone()
                    state[:, :, 0] += source_activation[:, position] - base_activation[:, position]
                    return state

                cells.append(Cell(boundary, start, [layer * len(positions) + column], make))
            else:

                def make(rows, layer=layer, position=position, start=start):
                    patched = torch.zeros(base.z[layer].shape[1], dtype=torch.bool, device=base.z[layer].device)
                    patched[slice(None) if position is None else position] = True
                    delta_z = (patched_z(site, layer, base, source, patched) - base.z[layer])[:, start:, rows]
                    change = torch.einsum("bshe,hed->hbsd", delta_z, tf.layers[layer].W_O[rows])
                    return base.resid[2 * layer + 1][None, :, start:] + change

                first = (layer * len(positions) + column) * tf.n_heads
                cells.append(Cell(2 * layer + 1, start, list(range(first, first + tf.n_heads)), make))
    return cells


@dataclass
class Setup:
    """What every sweep begins with: the engine, the metric resolved, the base and source tokens."""

    tf: Transformer
    reader: Reader
    base_tokens: Tensor
    source_tokens: Tensor
    n_pos: int  # the prompts' length (grids' position axis)


def setup(model, clean_tokens, corrupt_tokens, metric, direction: str) -> Setup:
    clean_tokens, corrupt_tokens = check_tokens(model, clean_tokens, corrupt_tokens)
    n_batch, n_pos = clean_tokens.shape
    reader = make_reader(metric, n_batch, n_pos, model.cfg.device)
    # Positions after the last one the metric reads cannot change it: they are never computed.
    clean_tokens, corrupt_tokens = clean_tokens[:, : reader.n_pos_needed], corrupt_tokens[:, : reader.n_pos_needed]
    base, source = (corrupt_tokens, clean_tokens) if direction == "denoise" else (clean_tokens, corrupt_tokens)
    return Setup(Transformer(model, reader.token_ids), reader, base, source, n_pos)


def sweep(
    model,
    clean_tokens,
    corrupt_tokens,
    metric,
    site: str,
    direction: str = "denoise",
    by_position: bool | None = None,
    max_memory: int | None = None,
    layers: Sequence[int] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """(grid of patched metric values, base run metric, source run metric): see `activation_patch`. `layers`:
    patch only these (the grid is NaN at the others), one worker's share of a sweep."""
    by_position = check_site(site, direction, by_position)
    s = setup(model, clean_tokens, corrupt_tokens, metric, direction)
    base_keep, source_keep = site_activations(site)
    n_batch, n_computed = s.base_tokens.shape
    itemsize = s.tf.W_E.element_size()
    fixed = run_bytes(s.tf, n_batch, n_computed, base_keep, itemsize) + run_bytes(
        s.tf, n_batch, n_computed, source_keep, itemsize
    )
    max_rows = row_budget(s.tf, s.reader, n_batch, n_computed, fixed, max_memory, itemsize)
    shape = grid_shape(site, by_position, s.tf.n_layers, s.n_pos, s.tf.n_heads)
    with torch.inference_mode():
        base = s.tf.run(s.base_tokens, s.reader, base_keep)
        source = s.tf.run(s.source_tokens, s.reader, source_keep)
        cells = site_cells(s.tf, site, by_position, base, source, s.n_pos)
        if layers is not None:
            per_layer = math.prod(shape[1:])
            cells = [cell for cell in cells if cell.indices[0] // per_layer in set(layers)]
        values = evaluate_cells(s.tf, base, s.reader, cells, math.prod(shape), max_rows)
    return values.reshape(shape + base.value.shape).clone(), base.value.clone(), source.value.clone()


def activation_patch(
    model,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupt_tokens: Int[Tensor, "batch pos"],
    metric: Metric | Callable[[Float[Tensor, "batch pos vocab"]], Float[Tensor, ""]],
    site: str,
    direction: str = "denoise",
    by_position: bool | None = None,
    max_memory: int | None = None,
) -> Tensor:
    """Exact activation patching of every layer x position (x head) of a site: the grid of patched metric values.

    site: resid_pre, resid_mid, resid_post, attn_out, mlp_out ([layer, pos], or [layer] with by_position=False),
    or head_out (= z), q, k, v, pattern ([layer, head] over all positions by default, [layer, pos, head] with
    by_position=True; for pattern, pos is the query position). direction: "denoise" patches clean activations
    into the corrupted run, "noise" corrupted ones into the clean run. metric: a `Metric` (fast: it names the
    positions and columns it reads) or any function of the full logits [batch, pos, vocab] to a scalar.
    max_memory: bytes the sweep may use beyond the model's weights (None: a default chunking); refused before
    running when too small. The values equal TransformerLens's `patching.get_act_patch_*` helpers'.
    """
    return sweep(model, clean_tokens, corrupt_tokens, metric, site, direction, by_position, max_memory)[0]


# ----------------------------------------------------------------------------------------------------------------
# Path patching (Wang et al. 2023, Algorithm 1)


def check_heads(model, heads, what: str) -> list[tuple[int, int]]:
    checked = []
    for entry in heads:
        if len(entry) != 2:
            raise InterpError(f"each {what} is (layer, head), not {entry!r}")
        checked.append(check_head(model, entry[0], entry[1], what))
    return checked


def check_receivers(model, receivers) -> dict[int, list[tuple[str, list[int]]]] | None:
    """None for the final residual stream, else {layer: [(input, heads)]} of the receivers' q/k/v inputs."""
    if isinstance(receivers, str):
        if receivers != "resid_final":
            raise InterpError(
                f"unknown receivers {receivers!r}: use 'resid_final' or [(layer, head, 'q'|'k'|'v'), ...]"
            )
        return None
    by_layer: dict[int, dict[str, list[int]]] = {}
    for entry in receivers:
        if len(entry) != 3 or entry[2] not in RECEIVER_INPUTS:
            raise InterpError(f"each receiver is (layer, head, 'q'|'k'|'v'), not {entry!r}")
        layer, head = check_head(model, entry[0], entry[1], "receiver")
        heads = by_layer.setdefault(layer, {}).setdefault(entry[2], [])
        if head not in heads:
            heads.append(head)
    if not by_layer:
        raise InterpError("no receivers given")
    return {layer: sorted(inputs.items()) for layer, inputs in sorted(by_layer.items())}


def path_patch(
    model,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupt_tokens: Int[Tensor, "batch pos"],
    metric: Metric | Callable,
    receivers: str | Sequence[tuple[int, int, str]],
    senders: Sequence[tuple[int, int]] | None = None,
    max_memory: int | None = None,
) -> Float[Tensor, "layer head *prompt"]:
    """Path patching from each sender head to the receivers: the metric per sender ([layer, head], NaN where a head
    is not a sender; a per-prompt metric adds a prompt axis).

    For each sender (batched over senders): run the clean input with every head's output frozen to its clean value
    except the sender's, which takes its corrupted value, MLPs and LayerNorms recomputed, and record the receivers:
    the q/k/v inputs of the heads `[(layer, head, "q"|"k"|"v"), ...]`, or the final residual stream
    (`"resid_final"`: the sender's direct effect through the MLPs after it); then run the clean input with only the
    receivers patched to those values and read the metric. A sender at or after the last receiver's layer has no
    path to it: its value is the clean metric.
    """
    final_receivers = check_receivers(model, receivers)
    senders = (
        check_heads(model, senders, "sender")
        if senders is not None
        else [(layer, head) for layer in range(model.cfg.n_layers) for head in range(model.cfg.n_heads)]
    )
    s = setup(model, clean_tokens, corrupt_tokens, metric, "noise")  # base = clean, source = corrupt
    tf, reader = s.tf, s.reader
    n_batch, n_pos = s.base_tokens.shape
    itemsize = tf.W_E.element_size()
    clean_keep = ["resid", "attn_out", "q", "k", "v", "z"]
    fixed = run_bytes(tf, n_batch, n_pos, clean_keep, itemsize) + run_bytes(tf, n_batch, n_pos, ["z"], itemsize)
    max_rows = row_budget(tf, reader, n_batch, n_pos, fixed, max_memory, itemsize)
    last_layer = tf.n_layers if final_receivers is None else max(final_receivers)

    with torch.inference_mode():
        clean = tf.run(s.base_tokens, reader, clean_keep)
        corrupt = tf.run(s.source_tokens, reader, ["z"])
        grid = torch.full((tf.n_layers, tf.n_heads, *clean.value.shape), float("nan"), device=model.cfg.device)
        cells = []
        for layer in sorted({layer for layer, _ in senders}):
            heads = [head for sender_layer, head in senders if sender_layer == layer]
            if layer >= last_layer:
                grid[layer, heads] = clean.value
                continue

            head_index = torch.tensor(heads, device=tf.device(layer))

            def make(rows, layer=layer, head_index=head_index):
                delta_z = (corrupt.z[layer] - clean.z[layer])[:, :, head_index[rows]]
                change = torch.einsum("bphe,hed->hbpd", delta_z, tf.layers[layer].W_O[head_index[rows]])
                return clean.resid[2 * layer + 1][None] + change

            cells.append(Cell(2 * layer + 1, 0, [layer * tf.n_heads + head for head in heads], make))
        for _, chunk in chunks(cells, max_rows):
            joins = [(cell.boundary, lambda cell=cell, rows=rows: cell.make(rows)) for cell, rows in chunk]
            indices = [index for cell, rows in chunk for index in cell.indices[rows]]
            recorded = frozen_forward(tf, clean, reader, joins, len(indices), final_receivers)
            if final_receivers is None:
                logits = tf.logits(recorded)
            else:
                first = 2 * min(final_receivers)
                joins = [(first, lambda: clean.resid[first][None].expand(len(indices), -1, -1, -1))]
                logits = tf.propagate(clean, reader, 0, joins, receiver_edit(recorded))
            for row, index in enumerate(indices):
                grid.view(-1, *clean.value.shape)[index] = reader(logits[row])
    return grid.clone()


def frozen_forward(
    tf: Transformer,
    clean: Run,
    reader: Reader,
    joins: list[tuple[int, Callable[[], Tensor]]],
    n_rows: int,
    receivers: dict[int, list[tuple[str, list[int]]]] | None,
):
    """Step 1 of path patching: from each row's boundary on, attention frozen to the clean run's output, MLPs
    recomputed. Returns the final residual at the read positions (receivers None), or each receiver layer's
    [(input, heads, values [rows, batch, pos, heads, d_head])], clean for rows that join after that layer.

    With attention frozen, positions never mix: for the final residual only the read positions are carried."""
    recorded: dict[int, list[tuple[str, list[int], Tensor]]] = {}

    def arrive(boundary: int, rows: Tensor) -> Tensor:
        return take_positions(rows, reader.positions) if receivers is None else rows

    def step(boundary: int, state: Tensor) -> Tensor:
        layer, after_attention = divmod(boundary, 2)
        if after_attention:
            return state + tf.mlp(layer, state)
        if receivers is None:
            return state + take_positions(clean.attn_out[layer], reader.positions)
        if layer in receivers:
            weights = tf.layers[layer]
            normed = tf.norm(state, weights.ln1)
            for name, heads in receivers[layer]:
                W, b = {
                    "q": (weights.W_Q, weights.b_Q),
                    "k": (weights.W_K, weights.b_K),
                    "v": (weights.W_V, weights.b_V),
                }[name]
                values = getattr(clean, name)[layer][None, :, :, heads].repeat(n_rows, 1, 1, 1, 1)
                values[: state.shape[0]] = tf.project(normed, W, b)[:, :, :, heads]
                recorded.setdefault(layer, []).append((name, heads, values))
        return state + clean.attn_out[layer]

    if receivers is None:
        return tf.flow(joins, 2 * tf.n_layers, step, arrive)
    tf.flow(joins, 2 * max(receivers) + 1, step, arrive)  # through the last receivers' (frozen) attention
    return recorded


def receiver_edit(recorded: dict[int, list[tuple[str, list[int], Tensor]]]) -> Callable:
    """Step 2 of path patching: overwrite the receivers' inputs with the values recorded in step 1."""

    def edit(layer, q, k, v, query_positions):
        inputs = {"q": q, "k": k, "v": v}
        for name, heads, values in recorded.get(layer, []):
            if name == "q" and query_positions is not None:  # the last layer computes only the read queries
                values = take_positions(values.flatten(-2), query_positions).unflatten(-1, values.shape[-2:])
            inputs[name][..., heads, :] = values
        return inputs["q"], inputs["k"], inputs["v"]

    return edit


# ----------------------------------------------------------------------------------------------------------------
# For the CLI


CLI_SITES = RESIDUAL_SITES + ("head_out",)


def patch_grid(
    model,
    clean_tokens,
    corrupt_tokens,
    metric,
    site: str,
    direction: str = "denoise",
    max_memory: int | None = None,
    workers: Workers | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """(grid, clean metric, corrupt metric) of `sweep` over every layer, the layers shared out to `workers`."""
    if site not in CLI_SITES:
        raise InterpError(f"unknown site {site!r}; use one of {', '.join(CLI_SITES)}")

    def sweep_layers(replica, layers: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        return sweep(
            replica, clean_tokens, corrupt_tokens, metric, site, direction, max_memory=max_memory, layers=layers
        )

    shards = (workers or Workers(model)).map(sweep_layers, range(model.cfg.n_layers), f"patching {site}")
    grid = fill_in([shard_grid for shard_grid, _, _ in shards])
    _, base_value, source_value = shards[0]
    return (grid, source_value, base_value) if direction == "denoise" else (grid, base_value, source_value)


def patch_grid_for_cli(
    model,
    clean: str,
    corrupt: str,
    answer: str,
    wrong: str,
    site: str,
    direction: str = "denoise",
    max_memory: int | None = None,
    prepend_bos: bool = True,
    workers: Workers | None = None,
) -> dict:
    """`interp patch`: the grid of logit(answer) - logit(wrong) at the last position, patched at every layer x
    position (residual sites) or layer x head (head_out, all positions), with labels and the unpatched metrics.
    `workers` share the layers out (default: all in this process)."""
    from interp.tokens import prompt_tokens, single_token_id, str_tokens

    if site not in CLI_SITES:
        raise InterpError(f"unknown site {site!r}; use one of {', '.join(CLI_SITES)}")
    clean_tokens, corrupt_tokens = (prompt_tokens(model, text, prepend_bos=prepend_bos) for text in (clean, corrupt))
    if clean_tokens.shape[1] != corrupt_tokens.shape[1]:
        bos = " (BOS included)" if prepend_bos else ""
        raise InterpError(
            f"the clean prompt is {clean_tokens.shape[1]} tokens and the corrupt prompt "
            f"{corrupt_tokens.shape[1]}{bos}: patching needs the same length"
        )
    answer_id = single_token_id(answer, model.tokenizer, "answer")
    wrong_id = single_token_id(wrong, model.tokenizer, "wrong answer")
    metric = logit_diff_metric(answer_id, wrong_id)

    grid, clean_value, corrupt_value = patch_grid(
        model, clean_tokens, corrupt_tokens, metric, site, direction, max_memory, workers
    )
    clean_str = str_tokens(clean_tokens[0], model.tokenizer)
    columns = (
        [f"{position}:{token}" for position, token in enumerate(clean_str)]
        if site in RESIDUAL_SITES
        else [f"H{head}" for head in range(model.cfg.n_heads)]
    )
    return {
        "site": site,
        "direction": direction,
        "prepend_bos": prepend_bos,
        "metric": f"logit({answer!r}) - logit({wrong!r}) at the last position",
        "clean_metric": float(clean_value),
        "corrupt_metric": float(corrupt_value),
        "row_axis": "layer",
        "column_axis": "position" if site in RESIDUAL_SITES else "head",
        "row_labels": [f"L{layer}" for layer in range(model.cfg.n_layers)],
        "column_labels": columns,
        "clean_tokens": clean_str,
        "corrupt_tokens": str_tokens(corrupt_tokens[0], model.tokenizer),
        "clean_token_ids": clean_tokens[0].tolist(),
        "corrupt_token_ids": corrupt_tokens[0].tolist(),
        "grid": grid.tolist(),
    }
