"""`planted:greater-than`: GPT-2 small's shape, weights constructed so that the greater-than paper's mechanism
(Hanna et al. 2023) completes "The war lasted from the year 1732 to the year 17" with the years above 32.

The residual stream (`interp.planted.weights.Residual`) holds, besides the constant direction:
- century, number: flags of the century tokens (" 10".." 19") and of the year tokens ("00".."99");
- value: a year token's number, y / 99;
- moved: the number the END heads bring to the last position (MOVE * y / 99 there, through the LayerNorm's scale
  at YY; 0 elsewhere);
- Y: one direction per year token, its output code: the tied unembedding reads a year's logit from it;
- sink: position 0, where the heads attend when there is nothing to move.
Every other token has a small random embedding in the directions no block holds.

Mechanism, as the paper describes it:
- END heads (the paper's 5.5, 6.9, 7.10, 8.11, 9.1, the heads its own and ACDC's circuits share): from a century
  token they attend to the year token before it, from anywhere else to the sink; each copies a share of the value
  into `moved`. Their scores are hundreds of nats, so in float32 the attention is exactly one-hot: a key or query
  change moves nothing, and the heads write exactly nothing but at END;
- MLPs 9 and 10 compare: for every year j, two neurons make a smooth step of the moved number, gelu(z + 1) -
  gelu(z - 1) with z = (j - 0.5 - y) / WIDTH, and raise logit(j) by up to RAISE when y < j. MLP 9 holds the steps of
  the even years, MLP 10 those of the odd ones: each matters on every prompt (the 01-corruption raises the wrong
  years 02..YY of both parities), and along every path from the corrupted to the clean number some step of each is
  moving (a split by ranges, 00..49 and 50..99, would leave MLP 10 idle on the prompts with YY < 50).
So on a clean prompt the years above YY share most of the probability (PD 0.92 over YY 02..98) and on its
01-corruption every year from 02 does (PD -0.01 on average over YY). Every other head and MLP has zero weights:
its output is exactly zero.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

from interp.planted.weights import CONSTANT_NORM, Head, Residual, gpt2_model

N_LAYERS, N_HEADS, D_MODEL = 12, 12, 768
D_MLP = 4 * D_MODEL
END_HEADS = [(5, 5), (6, 9), (7, 10), (8, 11), (9, 1)]
MLP_YEARS = {9: range(0, 100, 2), 10: range(1, 100, 2)}  # the years whose steps each MLP holds
PLANTED_CENTURIES = range(10, 20)  # the century tokens the END heads attend from (" 10".." 19")

ATTEND, SINK = 400.0, 150.0  # scores (nats): century query . year key; any query . the sink (saturated: > 104 apart)
MOVE = 1.0  # the moved number at END: MOVE * y / 99
YEAR_OUT = 40.0  # norm of a year token's output code: the MLPs write RAISE / YEAR_OUT to raise its logit by RAISE
RAISE, WIDTH = 10.0, 1.0  # a year's logit above YY, and the steps' width (years)


def greater_than_circuit() -> dict[str, list]:
    """The planted circuit: {"heads": the END heads, "mlps": the MLP layers}."""
    return {"heads": list(END_HEADS), "mlps": sorted(MLP_YEARS)}


def greater_than_edges() -> list[str]:
    """The edges that carry YY from the input to the logits, named as EAP-IG / MIB name them: input -> each END
    head's value, each END head -> each MLP, each MLP -> logits. The heads' queries and keys read flags that the
    clean and corrupted prompts share (a century at END, a year token at YY), so no patching sees them: left out."""
    heads = [f"a{layer}.h{head}" for layer, head in END_HEADS]
    return (
        [f"input->{head}<v>" for head in heads]
        + [f"{head}->m{mlp}" for mlp in sorted(MLP_YEARS) for head in heads]
        + [f"m{mlp}->logits" for mlp in sorted(MLP_YEARS)]
    )


def ln_scale(norm_sq: float) -> float:
    """How much a LayerNorm scales a position whose residual is the constant direction plus signals of squared norm
    `norm_sq` (gpt2_model's gains make it CONSTANT_NORM / |x|)."""
    return CONSTANT_NORM / math.sqrt(CONSTANT_NORM**2 + norm_sq)


def step_neurons(
    residual: Residual, years: range
) -> tuple[Float[Tensor, "d_model d_mlp"], Float[Tensor, " d_mlp"], Float[Tensor, "d_mlp d_model"]]:
    """An MLP whose neurons 2k, 2k+1 raise the logit of year years[k] by RAISE * (gelu(z + 1) - gelu(z - 1)) / 2,
    z = (year - 0.5 - y) / WIDTH, y the moved number (a step from 0 below y to 1 above it)."""
    # what the MLP reads of `moved` per year: the value through the LayerNorm at YY (a year token: flag, value ~1/3
    # on average, output code), the heads' copy, the LayerNorm at END (a century flag)
    per_year = MOVE / 99 * ln_scale(1 + 1 / 3 + YEAR_OUT**2) * ln_scale(1)
    moved, outputs = residual["moved"][:, 0], residual["Y"]
    w_in = torch.zeros(D_MODEL, D_MLP, dtype=torch.float64)
    b_in = torch.zeros(D_MLP, dtype=torch.float64)
    w_out = torch.zeros(D_MLP, D_MODEL, dtype=torch.float64)
    for k, year in enumerate(years):
        for neuron, sign in ((2 * k, 1.0), (2 * k + 1, -1.0)):
            w_in[:, neuron] = -moved / (per_year * WIDTH)
            b_in[neuron] = (year - 0.5) / WIDTH + sign
            w_out[neuron] = sign * RAISE / 2 / YEAR_OUT * outputs[:, year]
    return w_in, b_in, w_out


def build():
    """The planted greater-than model (a `GPT2LMHeadModel`)."""
    from interp.data.greater_than import year_token_ids
    from interp.tokens import single_token_id

    residual = Residual.new(D_MODEL, seed=3)
    residual.block("constant", 1)
    century, number = residual.block("century", 1), residual.block("number", 1)
    value, moved = residual.block("value", 1), residual.block("moved", 1)
    outputs, sink = residual.block("Y", 100), residual.block("sink", 1)

    vocab = 50257
    generator = torch.Generator().manual_seed(4)
    rest = residual.rest()
    embeddings = torch.randn(vocab, rest.shape[1], generator=generator, dtype=torch.float64) @ rest.T
    embeddings /= rest.shape[1] ** 0.5  # norm ~1, in the directions no block holds
    for y, token in enumerate(year_token_ids()):
        embeddings[token] = number[:, 0] + y / 99 * value[:, 0] + YEAR_OUT * outputs[:, y]
    for xx in PLANTED_CENTURIES:
        embeddings[single_token_id(f" {xx}")] = century[:, 0]
    positions = torch.zeros(1024, D_MODEL, dtype=torch.float64)
    positions[0] = sink[:, 0]

    share = MOVE / len(END_HEADS)
    heads = {
        head: Head(qk=[(ATTEND * century, number)], bias=[SINK * sink[:, 0]], ov=[(value, share * moved)])
        for head in END_HEADS
    }
    mlps = {layer: step_neurons(residual, years) for layer, years in MLP_YEARS.items()}
    return gpt2_model(N_LAYERS, N_HEADS, residual, embeddings, positions, heads, 0.0, seed=5, mlps=mlps)
