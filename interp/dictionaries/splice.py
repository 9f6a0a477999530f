"""Dictionaries spliced into the engine's forward (`interp.engine.Transformer.run`, as an edit).

At each dictionary's site the activation x is replaced by the reconstruction plus the error,

    x  ->  decode(f) + e,    f = encode(x),  e = x - decode(f)

so the forward is the model's own (to rounding) unless the error is dropped (output "reconstruction": as in SAE
Lens's "loss with the SAE spliced in") or the activation zeroed (output "zero": zero ablation). f and e are the
nodes of Marks et al.'s feature circuits: `replace` may set them (patching, interpolation: leaves whose gradients
`interp.dictionaries.features` reads), and `keep_nodes` keeps them.

The bridge's weights are processed (LayerNorms folded, writing weights centred); a dictionary trained on the model
as the hub serves it gets that model's activations back: each position's mean over d_model (the sum of what
centring removed from each write, `interp.processing.ProcessingRecord`), the value biases, ln_2's affine map for a
transcoder that reads the MLP's input. The change the dictionary makes is the same in both conventions, so the
model goes on with its processed activation plus that change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.dictionaries.dictionary import Convention, Dictionary
from interp.errors import InterpError
from interp.processing import ProcessingRecord

OUTPUTS = ("exact", "reconstruction", "zero")
Replace = Callable[[int, Tensor, Tensor], tuple[Tensor, Tensor]]  # (dictionary index, f, e) -> (f, e)


@dataclass
class Nodes:
    """One dictionary's nodes in one spliced forward: features [batch, pos, d_sae], error [batch, pos, d_out] (in
    the dictionary's own convention), and the input it encoded."""

    features: Tensor
    error: Tensor
    input: Tensor


@dataclass
class FeatureSelection:
    """Which feature activations a spliced run keeps: some features, some positions, or each position's top k (as
    (activation, feature id) pairs). None keeps all of that axis."""

    features: Sequence[int] | None = None
    positions: Sequence[int] | None = None
    top_k: int | None = None

    def kept_bytes(self, n_batch: int, n_pos: int, d_sae: int, itemsize: int = 4) -> int:
        """The size of what one dictionary's selection keeps, known before the run."""
        n_pos = n_pos if self.positions is None else len(self.positions)
        if self.top_k is not None:
            return n_batch * n_pos * min(self.top_k, d_sae) * (itemsize + 8)  # values and int64 ids
        n_features = d_sae if self.features is None else len(self.features)
        return n_batch * n_pos * n_features * itemsize

    def take(self, features: Float[Tensor, "batch pos d_sae"]) -> Tensor | tuple[Tensor, Tensor]:
        if self.positions is not None:
            features = features[:, list(self.positions)]
        if self.features is not None:
            features = features[..., list(self.features)]
        if self.top_k is not None:
            top = features.topk(min(self.top_k, features.shape[-1]), dim=-1)
            ids = top.indices if self.features is None else torch.as_tensor(self.features)[top.indices]
            return top.values, ids
        return features


@dataclass
class Splice:
    """An edit of the engine's forward that splices `dictionaries` in (see the module's docstring).

    After the run, `nodes[i]` holds dictionary i's features, error and input where `keep_nodes`, `kept[i]` its
    feature selection where `select` was given."""

    dictionaries: Sequence[Dictionary]
    processing: ProcessingRecord
    tokens: Int[Tensor, "batch pos"]
    output: str = "exact"
    replace: Replace | None = None
    keep_nodes: bool = False
    select: FeatureSelection | None = None
    nodes: dict[int, Nodes] = field(default_factory=dict)
    kept: dict[int, Tensor | tuple[Tensor, Tensor]] = field(default_factory=dict)
    uncentred: bool = False  # track each position's mean even when no dictionary needs it
    mask: Tensor | None = None  # [batch, pos]: positions where the reconstruction is spliced in (None: all)

    def __post_init__(self):
        if self.output not in OUTPUTS:
            raise InterpError(f"unknown splice output {self.output!r}; use {', '.join(OUTPUTS)}")
        self.at: dict[tuple[str, int], list[int]] = {}
        for index, dictionary in enumerate(self.dictionaries):
            writes = dictionary.writes
            if dictionary.is_transcoder and (dictionary.site.kind, writes.kind) != ("mlp_in", "mlp_out"):
                raise InterpError(f"{dictionary.name}: interp splices transcoders of the MLP only")
            self.at.setdefault((writes.kind, writes.layer), []).append(index)  # its edit point has its name
        self.uncentred = self.uncentred or any(not d.convention.centred for d in self.dictionaries)
        self.mean = self.attn_mean = self.mlp_mean = None
        self.mlp_input: dict[int, Tensor] = {}

    def __call__(self, point: str, layer: int, x: Tensor) -> Tensor:
        if self.uncentred:
            self.track_mean(point, layer, x)
        if point == "mlp_in":
            self.mlp_input[layer] = x
        for index in self.at.get((point, layer), ()):
            x = self.splice(index, point, layer, x)
        return x

    def track_mean(self, point: str, layer: int, x: Tensor) -> None:
        """Each position's mean over d_model of what centring removed, at the residual stream and each output."""
        record = self.processing
        if point == "resid_pre" and layer == 0:
            n_pos = self.tokens.shape[1]
            self.mean = record.embed_mean[self.tokens.to(record.embed_mean.device)] + record.pos_mean[:n_pos]
        elif point == "z":
            weight, constant = record.attn_mean[layer]
            self.attn_mean = x.flatten(-2) @ weight.to(x.device) + constant.to(x.device)
        elif point == "resid_mid":
            self.mean = self.mean.to(x.device) + self.attn_mean
        elif point == "mlp_post":
            weight, constant = record.mlp_mean[layer]
            self.mlp_mean = x @ weight.to(x.device) + constant.to(x.device)
        elif point == "resid_post":
            self.mean = self.mean.to(x.device) + self.mlp_mean

    def offset(self, convention: Convention, point: str) -> Tensor | float:
        """What a convention adds to the processed activation at a d_model point."""
        if convention.centred:
            return 0.0
        mean = {"attn_out": self.attn_mean, "mlp_out": self.mlp_mean}.get(point, self.mean)
        return mean[..., None]

    def as_trained(self, convention: Convention, point: str, layer: int, x: Tensor) -> Tensor:
        """The activation at `point` as a dictionary of that convention was trained on it ("mlp_in": the MLP's
        input, which the forward must have passed already)."""
        if point == "mlp_in":
            normalised = self.mlp_input[layer]
            if not convention.affine_mlp_input:
                return normalised
            weight, bias = self.processing.ln2[layer]
            return normalised * weight.to(normalised.device) + bias.to(normalised.device)
        if point == "z":
            if not convention.value_biases_folded:
                x = x + self.processing.value_bias[layer].to(x.device)
            return x.flatten(-2)
        return x + self.offset(convention, point)

    def splice(self, index: int, point: str, layer: int, x: Tensor) -> Tensor:
        dictionary = self.dictionaries[index]
        if dictionary.d_out != (x.shape[-2] * x.shape[-1] if point == "z" else x.shape[-1]):
            raise InterpError(
                f"{dictionary.name}: reads {dictionary.d_in} dimensions, the model's {dictionary.writes.hook} has "
                f"{x.shape[-1] if point != 'z' else x.shape[-2] * x.shape[-1]}"
            )
        convention = dictionary.convention
        inputs = self.as_trained(convention, dictionary.site.kind if dictionary.is_transcoder else point, layer, x)
        target = self.as_trained(convention, point, layer, x) if dictionary.is_transcoder else inputs
        features = dictionary.encode(inputs)
        error = target - dictionary.decode(features, inputs)
        if self.replace is not None:
            features, error = self.replace(index, features, error)
        if self.keep_nodes:
            self.nodes[index] = Nodes(features, error, inputs)
        if self.select is not None:
            self.kept[index] = self.select.take(features.detach())
        if self.output == "zero":
            spliced = torch.zeros_like(target)
        else:
            spliced = dictionary.decode(features, inputs) + (error if self.output == "exact" else 0.0)
            if self.mask is not None:
                spliced = torch.where(self.mask[..., None].to(spliced.device), spliced, target)
        change = spliced - target  # the same in the processed convention
        if point == "z":
            return x + change.unflatten(-1, x.shape[-2:])
        return x + change


def splice_for(model, tokens: Int[Tensor, "batch pos"], dictionaries: Sequence[Dictionary], **options) -> Splice:
    """A Splice of `dictionaries` into a forward of `tokens` on `model` (options: Splice's fields)."""
    return Splice(list(dictionaries), model.interp_processing, tokens, **options)


def run_spliced(tf, tokens: Int[Tensor, "batch pos"], splice: Splice, reader=None) -> Tensor:
    """One forward with the splice: the metric when a reader is given, else the logits at every position
    [batch, pos, vocab] (or the reader's columns)."""
    from interp.metric_reader import Reader

    if reader is not None:
        return tf.run(tokens, reader, keep=(), edit=splice).value
    captured = {}

    def capture(logits):
        captured["logits"] = logits
        return logits.new_zeros(())

    n_batch, n_pos = tokens.shape
    positions = torch.arange(n_pos, device=tokens.device).expand(n_batch, n_pos)
    tf.run(tokens, Reader(positions, None, capture), keep=(), edit=splice)
    return captured["logits"]
