"""The building blocks of planted GPT-2 weights (see `interp.planted`).

- `Residual`: the residual stream cut into named blocks of orthonormal directions, all orthogonal to the all-ones
  vector (LayerNorm centres it away) and to a constant direction every position carries with a large norm, so that
  each LayerNorm divides by nearly the same number everywhere and acts as a fixed scaling.
- `Head`: an attention head written as what it does: QK terms (query read . key read, or a constant query),
  OV terms (read one block, write another), packed into GPT-2's 64 head dimensions.
- `gpt2_model`: a `GPT2LMHeadModel` of a given shape with those heads, zero MLPs except where asked, and the
  residual's embeddings; every head without a role carries small seeded random weights, plus any `minor` terms
  given for it (graded effects on the task: `interp.planted.ioi`'s noise level).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

CONSTANT_NORM = 100.0  # the constant direction's norm: planted signals are a few units, so LayerNorms stay linear
MAX_POSITIONS = 64  # positions with their own one-hot direction (the mechanisms that need position stop there)


@dataclass
class Residual:
    """Named blocks of orthonormal residual directions (columns), drawn from one seeded orthonormal basis whose
    first column is the all-ones direction."""

    d_model: int
    basis: Tensor
    blocks: dict[str, Tensor] = field(default_factory=dict)
    used: int = 1  # column 0 (all-ones) is never handed out

    @classmethod
    def new(cls, d_model: int, seed: int = 0) -> Residual:
        generator = torch.Generator().manual_seed(seed)
        start = torch.randn(d_model, d_model, generator=generator, dtype=torch.float64)
        start[:, 0] = 1.0
        basis, _ = torch.linalg.qr(start)
        return cls(d_model, basis * torch.sign(basis[0, 0]))

    def block(self, name: str, size: int) -> Tensor:
        if self.used + size > self.d_model:
            raise ValueError(f"the residual stream has no room for {name} ({size} more directions)")
        self.blocks[name] = self.basis[:, self.used : self.used + size]
        self.used += size
        return self.blocks[name]

    def rest(self) -> Tensor:
        """The directions no block holds (where tokens without a role live)."""
        return self.basis[:, self.used :]

    def __getitem__(self, name: str) -> Tensor:
        return self.blocks[name]


def low_coherence_codes(n: int, dim: int, seed: int = 0, steps: int = 400) -> Tensor:
    """[n, dim] unit vectors with small pairwise inner products (a few hundred steps of pushing apart the most
    similar pairs), so that n items can be told apart in dim < n dimensions."""
    generator = torch.Generator().manual_seed(seed)
    codes = torch.nn.functional.normalize(torch.randn(n, dim, generator=generator, dtype=torch.float64), dim=1)
    codes.requires_grad_(True)
    optimizer = torch.optim.Adam([codes], lr=0.01)
    for _ in range(steps):
        unit = torch.nn.functional.normalize(codes, dim=1)
        gram = unit @ unit.T - torch.eye(n, dtype=torch.float64)
        loss = torch.logsumexp(20 * gram.abs().flatten(), 0) + (unit.mean(0) ** 2).sum() * n
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return torch.nn.functional.normalize(codes.detach(), dim=1)


@dataclass
class Head:
    """An attention head by its terms. Scores (before softmax, already divided by sqrt(d_head)):
    `qk` terms (query_read [d_model, r], key_read [d_model, r]) add x_q query_read . x_k key_read; `bias` terms
    (key_read [d_model]) add x_k . key_read whatever the query. Output: `ov` terms (value_read [d_model, r],
    write [d_model, r]) add write @ (value_read^T x_k) averaged by attention."""

    qk: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    bias: list[Tensor] = field(default_factory=list)
    ov: list[tuple[Tensor, Tensor]] = field(default_factory=list)

    def weights(self, d_model: int, d_head: int) -> dict[str, Tensor]:
        """W_Q, b_Q, W_K, W_V [d_model, d_head] / [d_head] and W_O [d_head, d_model] (GPT-2 divides scores by
        sqrt(d_head): the query side carries that factor back)."""
        needed = {
            "QK": sum(query_read.shape[1] for query_read, _ in self.qk) + bool(self.bias),
            "OV": sum(value_read.shape[1] for value_read, _ in self.ov),
        }
        for circuit, dims in needed.items():
            if dims > d_head:
                raise ValueError(f"a head's {circuit} terms need {dims} dimensions; a GPT-2 head has {d_head}")
        w = {name: torch.zeros(d_model, d_head, dtype=torch.float64) for name in ("W_Q", "W_K", "W_V")}
        w["b_Q"], w["W_O"] = torch.zeros(d_head, dtype=torch.float64), torch.zeros(d_head, d_model, dtype=torch.float64)
        scale, used = math.sqrt(d_head), 0
        for query_read, key_read in self.qk:
            r = query_read.shape[1]
            w["W_Q"][:, used : used + r], w["W_K"][:, used : used + r] = scale * query_read, key_read
            used += r
        if self.bias:
            w["b_Q"][used], w["W_K"][:, used] = scale, sum(self.bias)
        used = 0
        for value_read, write in self.ov:
            r = value_read.shape[1]
            w["W_V"][:, used : used + r], w["W_O"][used : used + r] = value_read, write.T
            used += r
        return w


def noise_head(
    d_model: int, d_head: int, keep_out: Tensor, scale: float, generator: torch.Generator
) -> dict[str, Tensor]:
    """Small random weights that neither read nor write the directions `keep_out` (the constant and all-ones)."""

    def draw(*shape):
        return scale * torch.randn(*shape, generator=generator, dtype=torch.float64)

    def project(w):  # remove the keep_out components from the d_model side
        return w - keep_out @ (keep_out.T @ w)

    return {
        "W_Q": project(draw(d_model, d_head)),
        "W_K": project(draw(d_model, d_head)),
        "W_V": project(draw(d_model, d_head)),
        "b_Q": torch.zeros(d_head, dtype=torch.float64),
        "W_O": project(draw(d_model, d_head)).T,
    }


def gpt2_model(
    n_layer: int,
    n_head: int,
    residual: Residual,
    token_embeddings: Tensor,
    position_signals: Tensor,
    heads: dict[tuple[int, int], Head],
    noise_scale: float,
    seed: int,
    mlps: dict[int, tuple[Tensor, Tensor, Tensor]] | None = None,
    minor: dict[tuple[int, int], Head] | None = None,
):
    """A `GPT2LMHeadModel` with these weights. `token_embeddings` [vocab, d_model]; `position_signals`
    [n_positions, d_model] (the constant direction is added here); `mlps`: layer -> (W_in [d_model, d_mlp],
    b_in [d_mlp], W_out [d_mlp, d_model]), zero elsewhere; `minor`: terms added to the random weights of heads
    without a role (the random draws are the same with or without them)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    d_model = residual.d_model
    config = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=d_model)
    d_head = d_model // n_head
    with torch.device("meta"):  # every parameter is set below: no random init to pay for
        model = GPT2LMHeadModel(config)
    model.to_empty(device="cpu")
    model.tie_weights()  # to_empty gave the unembedding a tensor of its own
    constant = residual["constant"][:, 0]
    keep_out = torch.stack([residual.basis[:, 0], constant], 1)
    gain = CONSTANT_NORM / math.sqrt(d_model)  # LayerNorm(x) = x * gain * sqrt(d) / |x| ~ x
    generator = torch.Generator().manual_seed(seed)
    minor = minor or {}
    state = {
        "transformer.wte.weight": token_embeddings,
        "transformer.wpe.weight": position_signals + CONSTANT_NORM * constant,
    }
    for name in ["transformer.ln_f"] + [f"transformer.h.{layer}.ln_{i}" for layer in range(n_layer) for i in (1, 2)]:
        state[f"{name}.weight"] = torch.full((d_model,), gain)
        state[f"{name}.bias"] = torch.zeros(d_model)

    def head_weights(key: tuple[int, int]) -> dict[str, Tensor]:
        if key in heads:
            return heads[key].weights(d_model, d_head)
        weights = noise_head(d_model, d_head, keep_out, noise_scale, generator)
        if key in minor:
            weights = {name: weights[name] + value for name, value in minor[key].weights(d_model, d_head).items()}
        return weights

    for layer in range(n_layer):
        per_head = [head_weights((layer, head)) for head in range(n_head)]
        cat = lambda key, dim=1: torch.cat([w[key] for w in per_head], dim)  # noqa: E731
        prefix = f"transformer.h.{layer}"
        state[f"{prefix}.attn.c_attn.weight"] = torch.cat([cat("W_Q"), cat("W_K"), cat("W_V")], 1)
        state[f"{prefix}.attn.c_attn.bias"] = torch.cat([cat("b_Q", 0), torch.zeros(2 * d_model)])
        state[f"{prefix}.attn.c_proj.weight"] = cat("W_O", 0)
        state[f"{prefix}.attn.c_proj.bias"] = torch.zeros(d_model)
        w_in, b_in, w_out = (mlps or {}).get(
            layer, (torch.zeros(d_model, 4 * d_model), torch.zeros(4 * d_model), torch.zeros(4 * d_model, d_model))
        )
        state[f"{prefix}.mlp.c_fc.weight"], state[f"{prefix}.mlp.c_fc.bias"] = w_in, b_in
        state[f"{prefix}.mlp.c_proj.weight"], state[f"{prefix}.mlp.c_proj.bias"] = w_out, torch.zeros(d_model)
    parameters = dict(model.named_parameters())
    assert set(parameters) == set(state), set(parameters) ^ set(state)
    with torch.no_grad():
        for name, value in state.items():
            parameters[name].copy_(value.to(torch.float32))
    return model.eval()
