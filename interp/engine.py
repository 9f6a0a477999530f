"""The patching engine: GPT-2's forward written out over a TransformerBridge's processed weights, in pieces that
can start at any layer boundary and position, and sweeps of patched variants chunked to a memory budget.

Every patch, whatever its site, is a change of the residual stream at one layer *boundary* from some position on.
The engine is exact (the model's arithmetic, nothing approximated) and fast because:
- a patch at boundary b leaves everything before b unchanged: patched runs start from the base run's cached
  residual at b, and the variants of one sweep share a forward whose batch grows as it goes down the layers;
- a patch at position p leaves every earlier position unchanged (causal attention): only positions >= p are
  computed, attending to the base run's cached keys and values for the earlier ones;
- the metric names the positions and vocabulary columns it reads: the last layer computes queries and the MLP only
  at those positions, the unembedding only those columns (it is ~31% of a GPT-2 small forward), and positions
  after the last read one are never computed;
- patched runs are chunked to a memory budget estimated before anything runs.

No hook is ever attached to the model. Activation patching, path patching (`interp.patching`), node-level circuit
runs (`interp.circuit`), edge scores (`interp.edge_scores`) and the capitals ablation (`interp.vectors`) run on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import InterpError
from interp.metric_reader import Reader

# Working memory of the patched runs when no budget is given, beyond the cached base and source runs.
DEFAULT_WORKING_MEMORY = 64 * 2**20

# ----------------------------------------------------------------------------------------------------------------
# GPT-2's forward over the bridge's processed weights, in pieces that can start at any boundary and position

# Where a full forward (`Transformer.run`) lets an edit replace an activation, in forward order within a layer:
# the residual before attention, heads' outputs (z), attention's output, the residual after it, the MLP's normalised
# input, its hidden activations after GELU, its output, the residual after it.
EDIT_POINTS = ("resid_pre", "z", "attn_out", "resid_mid", "mlp_in", "mlp_post", "mlp_out", "resid_post")
Edit = Callable[[str, int, Tensor], Tensor]


def unedited(point: str, layer: int, x: Tensor) -> Tensor:
    return x


@dataclass
class Run:
    """What one full forward recorded. Boundary 2l is resid_pre of layer l, 2l + 1 its resid_mid, 2L the final
    residual (so resid_post of layer l is boundary 2l + 2). Lists not asked for are empty."""

    resid: list[Float[Tensor, "batch pos d_model"]]
    attn_out: list[Float[Tensor, "batch pos d_model"]]
    mlp_out: list[Float[Tensor, "batch pos d_model"]]
    q: list[Float[Tensor, "batch pos head d_head"]]
    k: list[Float[Tensor, "batch pos head d_head"]]
    v: list[Float[Tensor, "batch pos head d_head"]]
    z: list[Float[Tensor, "batch pos head d_head"]]
    pattern: list[Float[Tensor, "batch head query_pos key_pos"]]
    value: Float[Tensor, ""]  # the metric


RUN_FIELDS = ("resid", "attn_out", "mlp_out", "q", "k", "v", "z", "pattern")


@dataclass
class Layer:
    """One block's processed weights, as views of the bridge's parameters (no copies where the layout allows)."""

    ln1: tuple[Tensor, Tensor]
    W_Q: Float[Tensor, "d_model head*d_head"]
    b_Q: Float[Tensor, " head*d_head"]
    W_K: Float[Tensor, "d_model head*d_head"]
    b_K: Float[Tensor, " head*d_head"]
    W_V: Float[Tensor, "d_model head*d_head"]
    b_V: Float[Tensor, " head*d_head"]
    W_O: Float[Tensor, "head d_head d_model"]
    b_O: Float[Tensor, " d_model"]
    ln2: tuple[Tensor, Tensor]
    W_in: Float[Tensor, "d_model d_mlp"]
    b_in: Float[Tensor, " d_mlp"]
    W_out: Float[Tensor, "d_mlp d_model"]
    b_out: Float[Tensor, " d_model"]

    @classmethod
    def of_block(cls, block) -> Layer:
        attn, mlp = block.attn, block.mlp

        def matrix(W: Tensor) -> Tensor:  # [head, d_model, d_head] -> [d_model, head*d_head]
            return W.detach().permute(1, 0, 2).reshape(W.shape[1], -1)

        return cls(
            (block.ln1.weight.detach(), block.ln1.bias.detach()),
            matrix(attn.W_Q),
            attn.b_Q.detach().reshape(-1),
            matrix(attn.W_K),
            attn.b_K.detach().reshape(-1),
            matrix(attn.W_V),
            attn.b_V.detach().reshape(-1),
            attn.W_O.detach(),
            attn.b_O.detach(),
            (block.ln2.weight.detach(), block.ln2.bias.detach()),
            mlp.W_in.detach(),
            mlp.b_in.detach(),
            mlp.W_out.detach(),
            mlp.b_out.detach(),
        )


def attend(
    q: Float[Tensor, "... query_pos head d_head"],
    k: Float[Tensor, "... key_pos head d_head"],
    v: Float[Tensor, "... key_pos head d_head"],
    query_positions: Int[Tensor, " query_pos"] | Int[Tensor, "batch query_pos"],
) -> tuple[Float[Tensor, "... query_pos head d_head"], Float[Tensor, "... head query_pos key_pos"]]:
    """Causal attention of queries at absolute `query_positions` over keys at positions 0.. (z, pattern)."""
    scores = q.transpose(-3, -2) @ k.permute(*range(k.ndim - 3), -2, -1, -3) / math.sqrt(q.shape[-1])
    future = torch.arange(k.shape[-3], device=k.device) > query_positions.to(k.device)[..., None]
    if future.ndim == 3:  # per-prompt positions: [batch, 1 (head), query_pos, key_pos]
        future = future[:, None]
    pattern = scores.masked_fill(future, float("-inf")).softmax(-1)
    return mix_values(pattern, v), pattern


def mix_values(
    pattern: Float[Tensor, "... head query_pos key_pos"], v: Float[Tensor, "... key_pos head d_head"]
) -> Float[Tensor, "... query_pos head d_head"]:
    return (pattern @ v.transpose(-3, -2)).transpose(-3, -2)


def with_base_prefix(
    base: Float[Tensor, "batch pos ..."], x: Float[Tensor, "rows batch suffix ..."], start: int
) -> Float[Tensor, "rows batch pos ..."]:
    """Rows computed from `start` on, preceded by the base run's earlier positions (a patch at `start` or later
    leaves them unchanged: attention is causal)."""
    if not start:
        return x
    prefix = base[:, :start].to(x.device)
    return torch.cat([prefix.expand(x.shape[0], *prefix.shape), x], dim=2)


def take_positions(
    x: Float[Tensor, "... batch pos d"], positions: Int[Tensor, "batch n_read"]
) -> Float[Tensor, "... batch n_read d"]:
    """x at each prompt's own positions (the batch axis is the one before the positions)."""
    positions = positions.to(x.device)
    prompt = torch.arange(positions.shape[0], device=x.device)[:, None]
    return x[..., prompt, positions, :]


class Transformer:
    """GPT-2 written out over a TransformerBridge's processed weights.

    Patched states are [rows, batch, positions start.., d_model]: each row one patched variant of the batch, only
    positions from `start` on; earlier positions are the base run's (cached keys and values).
    """

    def __init__(self, model, token_ids: Tensor | None = None):
        cfg = model.cfg
        unsupported = [
            f"{name}={getattr(cfg, name, None)!r}"
            for name, want in (
                ("normalization_type", ("LN", "LNPre")),
                ("act_fn", ("gelu_new",)),
                ("positional_embedding_type", ("standard",)),
                ("parallel_attn_mlp", (False,)),
                ("n_key_value_heads", (None,)),
                ("attn_only", (False,)),
            )
            if getattr(cfg, name, None) not in want
        ]
        if unsupported:
            raise InterpError(
                "the patching engine runs GPT-2-style models only; this one has " + ", ".join(unsupported)
            )
        self.n_layers, self.n_heads, self.d_head = cfg.n_layers, cfg.n_heads, cfg.d_head
        self.eps = cfg.eps
        self.layers = [Layer.of_block(block) for block in model.blocks]
        self.W_E, self.W_pos = model.W_E.detach(), model.W_pos.detach()
        self.ln_final = (model.ln_final.weight.detach(), model.ln_final.bias.detach())
        W_U, b_U = model.W_U.detach(), model.b_U.detach()
        # Only the columns the metric reads.
        if token_ids is not None:
            W_U, b_U = W_U[:, token_ids.to(W_U.device)], b_U[token_ids.to(b_U.device)]
        self.W_U, self.b_U = W_U, b_U
        # Under a device map (`interp.models.device_placement`) each layer computes where its weights are: states
        # move to a layer's device as they enter it (`flow`, `run`), and logits come back to the embedding's.
        self.home = self.W_E.device

    def device(self, layer: int) -> torch.device:
        return self.layers[min(layer, self.n_layers - 1)].W_Q.device

    def norm(self, x: Tensor, weights: tuple[Tensor, Tensor]) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], *weights, eps=self.eps)

    def project(self, x: Tensor, W: Tensor, b: Tensor) -> Float[Tensor, "... pos head d_head"]:
        return (x @ W + b).unflatten(-1, (self.n_heads, self.d_head))

    def attn_out(self, layer: int, z: Float[Tensor, "... pos head d_head"]) -> Float[Tensor, "... pos d_model"]:
        W_O = self.layers[layer].W_O
        return z.flatten(-2) @ W_O.reshape(-1, W_O.shape[-1]) + self.layers[layer].b_O

    def mlp(
        self, layer: int, x: Float[Tensor, "... pos d_model"], edit: Edit | None = None
    ) -> Float[Tensor, "... pos d_model"]:
        weights = self.layers[layer]
        edit = edit or unedited
        x = edit("mlp_in", layer, self.norm(x.to(weights.W_in.device), weights.ln2))
        hidden = edit("mlp_post", layer, F.gelu(x @ weights.W_in + weights.b_in, approximate="tanh"))
        return edit("mlp_out", layer, hidden @ weights.W_out + weights.b_out)

    def logits(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... n_columns"]:
        return (self.norm(x.to(self.W_U.device), self.ln_final) @ self.W_U + self.b_U).to(self.home)

    def run(
        self,
        tokens: Int[Tensor, "batch pos"],
        reader: Reader,
        keep: Sequence[str] = RUN_FIELDS,
        track_grad: bool = False,
        edit: Edit | None = None,
    ) -> Run:
        """A full forward recording the activations named in `keep` (all of them are nodes of the graph when
        `track_grad`, so gradients of the metric can be taken with respect to them). `edit(point, layer, x)` may
        replace the activation at each of EDIT_POINTS (ablation, dictionaries spliced in); what it returns is what
        the forward goes on with and what is recorded."""
        record = Run(*([] for _ in RUN_FIELDS), value=torch.tensor(0.0))
        edit = edit or unedited

        def keep_as(name: str, value: Tensor) -> Tensor:
            if name in keep:
                getattr(record, name).append(value)
            return value

        x = self.W_E[tokens] + self.W_pos[: tokens.shape[1]]
        if track_grad:
            x.requires_grad_()
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        for layer, weights in enumerate(self.layers):
            x, positions = x.to(self.device(layer)), positions.to(self.device(layer))
            x = keep_as("resid", edit("resid_pre", layer, x))
            normed = self.norm(x, weights.ln1)
            q = keep_as("q", self.project(normed, weights.W_Q, weights.b_Q))
            k = keep_as("k", self.project(normed, weights.W_K, weights.b_K))
            v = keep_as("v", self.project(normed, weights.W_V, weights.b_V))
            pattern = keep_as("pattern", attend(q, k, v, positions)[1])
            z = keep_as("z", edit("z", layer, mix_values(pattern, v)))
            attn_out = keep_as("attn_out", edit("attn_out", layer, self.attn_out(layer, z)))
            x = keep_as("resid", edit("resid_mid", layer, x + attn_out))
            x = edit("resid_post", layer, x + keep_as("mlp_out", self.mlp(layer, x, edit)))
        keep_as("resid", x)
        record.value = reader(self.logits(take_positions(x, reader.positions)))
        return record

    def attention(
        self,
        layer: int,
        x: Float[Tensor, "rows batch suffix d_model"],
        start: int,
        base: Run,
        query_positions: Int[Tensor, "batch n_read"] | None = None,
        edit: Callable | None = None,
    ) -> Float[Tensor, "rows batch suffix_or_n_read d_model"]:
        """resid_mid from resid_pre at positions start.. (or only at `query_positions`, for the last layer),
        attending to the base run's keys and values for positions before `start`.

        `edit(layer, q, k, v, query_positions)` may overwrite heads' queries, keys or values (path patching)."""
        weights = self.layers[layer]
        x = x.to(self.device(layer))
        normed = self.norm(x, weights.ln1)
        k = with_base_prefix(base.k[layer], self.project(normed, weights.W_K, weights.b_K), start)
        v = with_base_prefix(base.v[layer], self.project(normed, weights.W_V, weights.b_V), start)
        if query_positions is None:
            resid, positions = x, torch.arange(start, start + x.shape[2], device=x.device)
            q = self.project(normed, weights.W_Q, weights.b_Q)
        else:
            resid = take_positions(with_base_prefix(base.resid[2 * layer], x, start), query_positions)
            positions = query_positions
            q = self.project(self.norm(resid, weights.ln1), weights.W_Q, weights.b_Q)
        if edit is not None:
            q, k, v = edit(layer, q, k, v, query_positions)
        return resid + self.attn_out(layer, attend(q, k, v, positions)[0])

    def flow(
        self,
        joins: list[tuple[int, Callable[[], Tensor]]],
        stop: int,
        step: Callable[[int, Tensor], Tensor],
        arrive: Callable[[int, Tensor], Tensor],
    ) -> Tensor:
        """Rows that join at their boundaries, carried to boundary `stop` half a layer at a time.

        `joins` is [(boundary, make_rows)], sorted by boundary; arrive(boundary, make_rows()) gives the joining
        rows' states and step(boundary, state) the state at the next boundary (attention from even boundaries, the
        MLP from odd ones). The batch grows as rows join: one forward serves variants that start at every layer,
        and no row computes a layer before its own.
        """
        state, joined = None, 0
        for boundary in range(joins[0][0], stop + 1):
            device = self.device(boundary // 2)  # the layer this boundary leads into
            if state is not None:
                state = state.to(device)
            while joined < len(joins) and joins[joined][0] == boundary:
                new = arrive(boundary, joins[joined][1]()).to(device)
                state = new if state is None else torch.cat([state, new])
                joined += 1
            if boundary < stop:
                state = step(boundary, state)
        return state

    def propagate(
        self,
        base: Run,
        reader: Reader,
        start: int,
        joins: list[tuple[int, Callable[[], Tensor]]],
        edit: Callable | None = None,
    ) -> Float[Tensor, "rows batch n_read n_columns"]:
        """Logits at the read positions of patched rows; make_rows() of each join gives [rows, batch, pos - start,
        d_model], the residual at its boundary from `start` on (earlier positions are the base run's)."""
        last_attention = 2 * (self.n_layers - 1)

        def arrive(boundary: int, rows: Tensor) -> Tensor:  # past the last attention, only read positions live
            if boundary > last_attention:
                return take_positions(with_base_prefix(base.resid[boundary], rows, start), reader.positions)
            return rows

        def step(boundary: int, state: Tensor) -> Tensor:
            layer, after_attention = divmod(boundary, 2)
            if after_attention:
                return state + self.mlp(layer, state)
            query_positions = reader.positions if boundary == last_attention else None
            return self.attention(layer, state, start, base, query_positions, edit)

        return self.logits(self.flow(joins, 2 * self.n_layers, step, arrive))


# ----------------------------------------------------------------------------------------------------------------
# Sweeps: cells of variants, chunked to a memory budget


@dataclass
class Cell:
    """Variants that join the patched forward together: same boundary, same first changed position."""

    boundary: int
    start: int
    indices: list[int]  # where each row's value goes in the flattened grid
    make: Callable[[slice], Tensor]  # rows -> residual states [rows, batch, pos - start, d_model]


def chunks(cells: list[Cell], max_rows: Callable[[int], int]):
    """(start, [(cell, rows)]): cells with one start, at most max_rows(start) rows, sorted by boundary."""
    by_start: dict[int, list[Cell]] = {}
    for cell in cells:
        by_start.setdefault(cell.start, []).append(cell)
    for start in sorted(by_start):
        chunk, n_rows, limit = [], 0, max_rows(start)
        for cell in sorted(by_start[start], key=lambda c: c.boundary):
            first = 0
            while first < len(cell.indices):
                take = min(len(cell.indices) - first, limit - n_rows)
                chunk.append((cell, slice(first, first + take)))
                first, n_rows = first + take, n_rows + take
                if n_rows == limit:
                    yield start, chunk
                    chunk, n_rows = [], 0
        if chunk:
            yield start, chunk


def evaluate_cells(
    tf: Transformer, base: Run, reader: Reader, cells: list[Cell], n_values: int, max_rows: Callable[[int], int]
) -> Float[Tensor, " n_values *prompt"]:
    """The metric of every variant of every cell, in grid order (NaN where no cell puts a value); per-prompt metrics
    add a trailing prompt axis."""
    values = torch.full((n_values, *base.value.shape), float("nan"), device=base.value.device)
    for start, chunk in chunks(cells, max_rows):
        if start >= reader.n_pos_needed:  # the patch changes no position the metric can see
            for cell, rows in chunk:
                values[cell.indices[rows]] = base.value
            continue
        joins = [(cell.boundary, lambda cell=cell, rows=rows: cell.make(rows)) for cell, rows in chunk]
        logits = tf.propagate(base, reader, start, joins)
        indices = [index for cell, rows in chunk for index in cell.indices[rows]]
        for row, index in enumerate(indices):
            values[index] = reader(logits[row])
    return values


def run_bytes(tf: Transformer, n_batch: int, n_pos: int, keep: Sequence[str], itemsize: int) -> int:
    """Bytes a Run records."""
    d_model = tf.W_E.shape[1]
    per_layer = {
        "resid": 2 * d_model,
        "attn_out": d_model,
        "mlp_out": d_model,
        "q": d_model,
        "k": d_model,
        "v": d_model,
        "z": d_model,
        "pattern": tf.n_heads * n_pos,
    }
    return itemsize * n_batch * n_pos * (tf.n_layers * sum(per_layer[name] for name in keep) + d_model)


def row_bytes(tf: Transformer, n_batch: int, n_pos: int, start: int, n_read: int, itemsize: int) -> int:
    """Peak working bytes of one patched row through a layer, positions start.. computed: state, norm, q/k/v, keys
    and values with the cached prefix, scores and pattern, MLP hidden, logits."""
    d_model, d_mlp = tf.W_E.shape[1], tf.layers[0].W_in.shape[1]
    per_position = 10 * d_model + 2 * d_mlp + 2 * tf.n_heads * n_pos
    return itemsize * n_batch * ((n_pos - start) * per_position + 2 * n_pos * d_model + n_read * tf.W_U.shape[1])


def row_budget(
    tf: Transformer, reader: Reader, n_batch: int, n_pos: int, fixed_bytes: int, max_memory: int | None, itemsize: int
) -> Callable[[int], int]:
    """How many patched rows a chunk starting at a position may hold: the budget less the cached runs, over one
    row's working bytes. Refuses before running when even one row does not fit."""

    def one_row(start: int) -> int:
        return row_bytes(tf, n_batch, n_pos, start, reader.positions.shape[1], itemsize)

    if max_memory is None:
        budget = max(DEFAULT_WORKING_MEMORY, fixed_bytes)
    elif fixed_bytes + one_row(0) > max_memory:
        raise InterpError(
            f"patching this batch needs at least {(fixed_bytes + one_row(0)) / 2**20:.1f} MiB (cached "
            f"runs {fixed_bytes / 2**20:.1f} MiB + one patched run {one_row(0) / 2**20:.1f} MiB), "
            f"over the budget of {max_memory / 2**20:.1f} MiB: use fewer or shorter prompts"
        )
    else:
        budget = max_memory - fixed_bytes
    return lambda start: max(1, budget // one_row(start))


def check_tokens(model, clean_tokens: Tensor, corrupt_tokens: Tensor) -> tuple[Tensor, Tensor]:
    """[batch, pos] token tensors on the model's device, or a clear error when they cannot be patched together."""
    clean_tokens, corrupt_tokens = (torch.as_tensor(t, dtype=torch.long) for t in (clean_tokens, corrupt_tokens))
    clean_tokens, corrupt_tokens = (t[None] if t.ndim == 1 else t for t in (clean_tokens, corrupt_tokens))
    if clean_tokens.ndim != 2 or corrupt_tokens.ndim != 2:
        raise InterpError("tokens must be [batch, pos] tensors")
    if clean_tokens.shape[1] != corrupt_tokens.shape[1]:
        raise InterpError(
            f"the clean prompts are {clean_tokens.shape[1]} tokens long and the corrupt prompts "
            f"{corrupt_tokens.shape[1]}: patching needs the same length"
        )
    if clean_tokens.shape[0] != corrupt_tokens.shape[0]:
        raise InterpError(
            f"{clean_tokens.shape[0]} clean prompts but {corrupt_tokens.shape[0]} corrupt prompts: "
            "patching pairs them one to one"
        )
    if clean_tokens.shape[1] > model.cfg.n_ctx:
        raise InterpError(f"the prompts are {clean_tokens.shape[1]} tokens; the model's context is {model.cfg.n_ctx}")
    if clean_tokens.shape[1] == 0:
        raise InterpError("the prompts are empty")
    device = model.cfg.device
    return clean_tokens.to(device), corrupt_tokens.to(device)
