"""Planted dictionaries: the planted models' residual streams are sums of known directions, and these dictionaries
have those directions as their decoder rows, so that feature-level methods can be checked against ground truth.

Each named direction (a name's code in each of planted IOI's blocks N, O, R, D, I; a word's code in planted
capitals' argument block E and answer block O; flags, positions, the constant) is a feature, once with each sign
(features are non-negative); an orthonormal basis of the directions they leave out completes them, so the
dictionary spans the whole residual stream. The codes of a block are more than its dimensions (157 names in 63),
so the encoder is the decoder's dual frame, W_enc = pinv(D) for D the signed-once directions: every activation is
rebuilt exactly (the error is zero, to rounding), and a direction written alone is read mostly by its own feature
(the codes have low coherence).
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp.dictionaries.dictionary import Convention, Dictionary, Site
from interp.errors import InterpError


def exact_dictionary(directions: dict[str, Tensor], d_model: int, hook: str, name: str) -> Dictionary:
    """A dictionary (standard ReLU, float32) whose features are the named directions, each signed both ways, plus
    the complement of their span; it rebuilds every activation exactly (see the module's docstring)."""
    labels = list(directions)
    named = torch.stack([directions[label].double() for label in labels]) if labels else torch.zeros(0, d_model)
    # An orthonormal basis of what the named directions leave out (directions of small singular value).
    _, singular, right = torch.linalg.svd(named, full_matrices=True)
    rank = int((singular > 1e-6 * singular.max()).sum()) if len(singular) else 0
    complement = right[rank:]
    rows = torch.cat([named, complement])
    labels += [f"other:{index}" for index in range(len(complement))]
    encoder = torch.linalg.pinv(rows)  # [d_model, n]: x = (x @ encoder) @ rows for every x
    signed_labels = labels + [f"-{label}" for label in labels]
    return Dictionary(
        torch.cat([encoder, -encoder], 1).float(),
        torch.zeros(2 * len(rows)),
        torch.cat([rows, -rows]).float(),
        torch.zeros(d_model),
        Site.parse(hook),
        convention=Convention(centred=True),
        apply_b_dec_to_input=False,
        name=name,
        source_format="planted",
        labels=signed_labels,
    )


def ioi_directions() -> dict[str, Tensor]:
    """planted:ioi's named directions: "N:Mary" (the name's code in block N; also O, R, D, I), the flags f, g, r,
    the positions P0..P63, the ramp, the constant."""
    from interp.planted.ioi import ioi_residual
    from interp.tokens import gpt2_tokenizer

    residual, names, codes = ioi_residual()
    tokenizer = gpt2_tokenizer()
    words = [tokenizer.decode([token]).strip() for token in names.tolist()]
    directions = {}
    for block in ("N", "O", "R", "D", "I"):
        written = codes @ residual[block].T
        directions |= {f"{block}:{word}": written[index] for index, word in enumerate(words)}
    for block in ("f", "g", "r", "ramp", "constant"):
        directions[block] = residual[block][:, 0]
    directions |= {f"P{position}": column for position, column in enumerate(residual["P"].T)}
    return directions


def capitals_directions() -> dict[str, Tensor]:
    """planted:capitals's named directions: each word's code in the argument block ("E:France") and the answer
    block ("O:France"), named by the first word that carries it; the class directions and flags, the cues' and
    tasks' flags, the sink, the ramp, the constant."""
    from interp.planted.capitals import CLASSES, CUES, capitals_residual, vocabulary
    from interp.tokens import gpt2_tokenizer

    residual, codes = capitals_residual()
    tokenizer = gpt2_tokenizer()
    code_words = {}
    for token, index in vocabulary()["codes"].items():
        code_words.setdefault(index, tokenizer.decode([token]).strip())
    directions = {}
    for block in ("E", "O"):
        written = codes @ residual[block].T
        directions |= {f"{block}:{code_words[index]}": written[index] for index in sorted(code_words)}
    for block, names in (("classes", CLASSES), ("flags", CLASSES), ("cue", CUES), ("task", CUES)):
        directions |= {f"{block}:{name}": column for name, column in zip(names, residual[block].T)}
    for block in ("sink", "ramp", "constant", "coloured"):
        directions[block] = residual[block][:, 0]
    return directions


def planted_dictionary(spec: str, hook: str) -> Dictionary:
    """The exact planted dictionary of a planted model spec at a hook whose activation lives in the residual
    stream's space (the residual itself, attention's or an MLP's output)."""
    from interp.planted import parse_planted

    kind = parse_planted(spec)[0]
    if Site.parse(hook).kind not in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"):
        raise InterpError(f"planted dictionaries read resid_*, attn_out or mlp_out, not {hook}")
    if kind == "ioi":
        directions, d_model = ioi_directions(), 768
    elif kind == "capitals":
        directions, d_model = capitals_directions(), 1024
    else:
        raise InterpError(f"{spec} has no planted dictionary (planted:ioi and planted:capitals have)")
    return exact_dictionary(directions, d_model, hook, f"planted:{kind}/{hook}")
