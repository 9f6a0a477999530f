"""One dictionary type for every file format: a sparse autoencoder (reads and rebuilds one activation) or a
transcoder (reads the MLP's input, predicts its output), with the architectures' published encoders.

    x  = normalise(x)                  (normalize_activations: none, layer_norm, constant_norm_rescale)
    pre = (x - b_dec if apply_b_dec_to_input else x) @ W_enc + b_enc
    standard:  f = ReLU(pre)
    topk:      f = ReLU(pre) on the k largest of pre, 0 elsewhere
    jumprelu:  f = ReLU(pre) where pre > threshold, 0 elsewhere
    gated:     f = [x' @ W_enc + b_gate > 0] * ReLU(x' @ (W_enc * exp(r_mag)) + b_mag)    (x' = x - b_dec, if applied)
    decode:    x_hat = f @ W_dec + b_dec, the normalisation undone (not a transcoder's), + x @ W_skip with a skip
               connection (x as read, before any normalisation)

`site` says where in the model the dictionary reads (and, for a transcoder, `site_out` where it writes), in
TransformerLens hook names; `convention` says how the activations it was trained on were computed, which may differ
from the bridge's processed weights (`interp.dictionaries.splice` gives it those activations).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from interp.errors import InterpError

ARCHITECTURES = ("standard", "topk", "jumprelu", "gated")
NORMALISATIONS = ("none", "layer_norm", "constant_norm_rescale")


@dataclass(frozen=True)
class Convention:
    """How the activations a dictionary was trained on were computed.

    centred: the model's writing weights were centred (TransformerLens's default processing, and the bridge's
    compatibility mode); False for a model loaded as the hub serves it (Hugging Face, sparsify, SAE Lens's trainer
    by default), whose residual stream and outputs keep each position's mean over d_model.
    value_biases_folded: heads' z computed with the value biases folded into the output bias.
    affine_mlp_input: a transcoder's input is the MLP's input as Hugging Face's GPT-2 computes it (LayerNorm with its
    weight and bias) rather than TransformerLens's `ln2.hook_normalized` (normalised only).
    """

    centred: bool = False
    value_biases_folded: bool = True
    affine_mlp_input: bool = False


# A site: the kind of activation and its layer, by its TransformerLens hook name:
#   resid_pre, resid_mid, resid_post   blocks.L.hook_resid_pre / _mid / _post
#   attn_out, mlp_out                  blocks.L.hook_attn_out / hook_mlp_out
#   z                                  blocks.L.attn.hook_z (heads flattened: d_in = n_heads * d_head)
#   mlp_in                             blocks.L.ln2.hook_normalized, or blocks.L.mlp.hook_in (a transcoder's input)
SITE_HOOKS = {
    "resid_pre": ("blocks.{}.hook_resid_pre",),
    "resid_mid": ("blocks.{}.hook_resid_mid",),
    "resid_post": ("blocks.{}.hook_resid_post",),
    "attn_out": ("blocks.{}.hook_attn_out",),
    "mlp_out": ("blocks.{}.hook_mlp_out",),
    "z": ("blocks.{}.attn.hook_z",),
    "mlp_in": ("blocks.{}.ln2.hook_normalized", "blocks.{}.mlp.hook_in"),
}


@dataclass(frozen=True)
class Site:
    kind: str
    layer: int

    @classmethod
    def parse(cls, hook: str) -> Site:
        for kind, names in SITE_HOOKS.items():
            for name in names:
                if match := re.fullmatch(re.escape(name).replace(r"\{\}", r"(\d+)"), hook):
                    return cls(kind, int(match.group(1)))
        known = ", ".join(name.format("L") for names in SITE_HOOKS.values() for name in names)
        raise InterpError(f"a dictionary at hook {hook!r} cannot be spliced in; interp reads {known}")

    @property
    def hook(self) -> str:
        return SITE_HOOKS[self.kind][0].format(self.layer)

    @property
    def boundary(self) -> int:
        """The residual boundary (`interp.engine`) a change of this activation first reaches: 2L is resid_pre of
        layer L, 2L + 1 its resid_mid."""
        kind, layer = self.kind, self.layer
        if kind == "resid_pre":
            return 2 * layer
        if kind in ("resid_mid", "attn_out", "z"):
            return 2 * layer + 1
        return 2 * layer + 2  # resid_post, mlp_out (a transcoder writes there)


@dataclass
class Dictionary:
    """A sparse autoencoder or transcoder (see the module's docstring)."""

    W_enc: Float[Tensor, "d_in d_sae"]
    b_enc: Float[Tensor, " d_sae"]
    W_dec: Float[Tensor, "d_sae d_out"]
    b_dec: Float[Tensor, " d_out"]
    site: Site
    architecture: str = "standard"
    site_out: Site | None = None  # a transcoder's output; None for an autoencoder
    convention: Convention = field(default_factory=Convention)
    apply_b_dec_to_input: bool = True
    k: int | None = None  # topk
    threshold: Float[Tensor, " d_sae"] | None = None  # jumprelu
    b_gate: Float[Tensor, " d_sae"] | None = None  # gated
    b_mag: Float[Tensor, " d_sae"] | None = None
    r_mag: Float[Tensor, " d_sae"] | None = None
    W_skip: Float[Tensor, "d_in d_out"] | None = None  # skip transcoders
    normalize_activations: str = "none"  # as SAE Lens names it
    name: str = ""  # where it came from: a path, or release/sae_id
    source_format: str = ""  # "sae_lens", "sparsify", "planted"
    labels: list[str] | None = None  # features' names, where known (planted dictionaries)

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise InterpError(
                f"{self.who}: unknown architecture {self.architecture!r}; interp reads {', '.join(ARCHITECTURES)}"
            )
        if self.normalize_activations not in NORMALISATIONS:
            raise InterpError(
                f"{self.who}: unknown activation normalisation {self.normalize_activations!r}; "
                f"interp reads {', '.join(NORMALISATIONS)}"
            )
        needs = {"topk": ("k",), "jumprelu": ("threshold",), "gated": ("b_gate", "b_mag", "r_mag")}
        missing = [name for name in needs.get(self.architecture, ()) if getattr(self, name) is None]
        if missing:
            raise InterpError(f"{self.who}: a {self.architecture} dictionary needs {', '.join(missing)}")
        d_in, d_sae = self.W_enc.shape
        if self.W_dec.shape[0] != d_sae or self.b_enc.shape != (d_sae,) or self.b_dec.shape != (self.d_out,):
            raise InterpError(
                f"{self.who}: inconsistent shapes: W_enc {tuple(self.W_enc.shape)}, b_enc "
                f"{tuple(self.b_enc.shape)}, W_dec {tuple(self.W_dec.shape)}, b_dec {tuple(self.b_dec.shape)}"
            )
        if self.apply_b_dec_to_input and d_in != self.d_out:
            raise InterpError(f"{self.who}: b_dec is subtracted from the input, but d_in != d_out")

    @property
    def who(self) -> str:
        return self.name or "dictionary"

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    @property
    def d_out(self) -> int:
        return self.W_dec.shape[1]

    @property
    def is_transcoder(self) -> bool:
        return self.site_out is not None

    @property
    def writes(self) -> Site:
        """Where the reconstruction goes: the site itself, or a transcoder's output."""
        return self.site_out or self.site

    def label(self) -> str:
        return self.writes.hook if not self.is_transcoder else f"{self.site.hook}->{self.site_out.hook}"

    def describe(self) -> dict:
        """What results files say of a dictionary."""
        return {
            "name": self.name,
            "format": self.source_format,
            "hook": self.site.hook,
            "hook_out": None if self.site_out is None else self.site_out.hook,
            "architecture": self.architecture,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "centred": self.convention.centred,
        }

    def feature_label(self, feature: int | str) -> str:
        if feature == "error" or self.labels is None:
            return str(feature)
        return self.labels[feature]

    def to(self, device=None, dtype=None) -> Dictionary:
        def move(x):
            return x.to(device=device, dtype=dtype) if isinstance(x, Tensor) else x

        return Dictionary(**{name: move(getattr(self, name)) for name in self.__dataclass_fields__})

    def normalise(self, x: Float[Tensor, "... d_in"]) -> tuple[Tensor, Tensor, Tensor]:
        """(x normalised, scale, shift): an autoencoder's reconstruction is mapped back as x_hat * scale + shift
        (SAE Lens's run-time normalisations, its constants; a transcoder's output is not mapped back)."""
        one, zero = torch.ones_like(x[..., :1]), torch.zeros_like(x[..., :1])
        if self.normalize_activations == "layer_norm":
            shift = x.mean(-1, keepdim=True)
            scale = (x - shift).std(-1, keepdim=True)
            return (x - shift) / (scale + 1e-5), scale, shift
        if self.normalize_activations == "constant_norm_rescale":
            scale = x.norm(dim=-1, keepdim=True) / self.d_in**0.5
            return x / scale, scale, zero
        return x, one, zero

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        x = self.normalise(x)[0]
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        if self.architecture == "gated":
            active = x @ self.W_enc + self.b_gate > 0
            return active * F.relu(x @ (self.W_enc * self.r_mag.exp()) + self.b_mag)
        pre = x @ self.W_enc + self.b_enc
        if self.architecture == "jumprelu":
            return F.relu(pre) * (pre > self.threshold)
        if self.architecture == "topk":
            top = pre.topk(min(self.k, self.d_sae), dim=-1)
            return torch.zeros_like(pre).scatter(-1, top.indices, F.relu(top.values))
        return F.relu(pre)

    def decode(self, features: Float[Tensor, "... d_sae"], x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_out"]:
        """The reconstruction of `features` encoded from input `x` (which the normalisation and a skip transcoder's
        skip connection read)."""
        out = features @ self.W_dec + self.b_dec
        if not self.is_transcoder:
            _, scale, shift = self.normalise(x)
            out = out * scale + shift
        return out if self.W_skip is None else out + x @ self.W_skip

    def __call__(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_out"]:
        return self.decode(self.encode(x), x)
