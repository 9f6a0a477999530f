"""GPT-2's weights processed in place, as TransformerBridge's compatibility mode processes them, without a copy.

`enable_compatibility_mode()` folds and centres a whole state dict at once, beside the original weights: on
gpt2-medium the process peaked at 3.8x the weights' bytes and kept 1.4x (`interp bench load`). Here the same
transformations are done on the Hugging Face model itself, one block at a time (in float32 for half-precision
weights), and the bridge is put in compatibility mode with no processing of its own; the only new tensors are the
unembedding, untied from the embedding because it is centred differently, and its bias. Tested against the
bridge's own processing.

In order, as TransformerLens does it:
- fold each LayerNorm into the weights that read it (ln_1 into q, k, v; ln_2 into the MLP's input; ln_f into the
  unembedding): b += ln.b @ W, W *= ln.w, ln.w = 1, ln.b = 0; then centre those weights over d_model (the
  normalised input has zero mean, so this changes nothing);
- centre the weights and biases that write to the residual stream (embeddings, W_O, W_out) over d_model;
- centre the unembedding over the vocabulary (logits move by a constant per position);
- fold the value biases into the output bias (each head's output moves by a constant), b_O centred again.

What processing removes is kept (`ProcessingRecord`), so that the activations the unprocessed model computes can be
given back exactly: a dictionary trained on them needs them (`interp.dictionaries`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn

UNEMBED_CHUNK = 8192  # vocabulary rows processed at a time


@dataclass
class ProcessingRecord:
    """What processing removed from the activations, per write to the residual stream.

    Centring takes each write's mean over d_model away; the unprocessed model's residual at a position is the
    processed one plus the sum of those means (times the all-ones vector). Each write's mean is linear in what the
    processed model computes: the embeddings' per token and per position, attention's in z (plus a constant: the
    folded value bias and b_O's mean), the MLP's in its hidden activations. LayerNorm folding moves each LayerNorm's
    affine map into the weights that read it; the unprocessed model's LayerNorm outputs are the normalised input
    times `ln2[l][0]` plus `ln2[l][1]`.
    """

    embed_mean: Float[Tensor, " vocab"]
    pos_mean: Float[Tensor, " n_ctx"]
    attn_mean: list[tuple[Float[Tensor, " head_d_head"], Float[Tensor, ""]]]  # mean = z.flatten(-2) @ w + c
    mlp_mean: list[tuple[Float[Tensor, " d_mlp"], Float[Tensor, ""]]]  # mean = hidden @ w + c
    value_bias: list[Float[Tensor, "head d_head"]]  # z before the value biases were folded = z + value_bias
    ln1: list[tuple[Float[Tensor, " d_model"], Float[Tensor, " d_model"]]]
    ln2: list[tuple[Float[Tensor, " d_model"], Float[Tensor, " d_model"]]]

    def to(self, device) -> ProcessingRecord:
        def move(x):
            if isinstance(x, Tensor):
                return x.to(device)
            return type(x)(move(item) for item in x)

        return ProcessingRecord(*(move(getattr(self, name)) for name in self.__dataclass_fields__))


def centred(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x - x.mean(dim, keepdim=True)


def fold_norm(norm: nn.LayerNorm, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) of a reader [d_model, out] with the LayerNorm before it folded in and W centred over d_model."""
    bias = bias + norm.bias.float() @ weight
    return centred(weight * norm.weight.float()[:, None], 0), bias


def reset_norm(norm: nn.LayerNorm) -> None:
    norm.weight.fill_(1.0)
    norm.bias.zero_()


@torch.no_grad()
def process_in_place(model) -> ProcessingRecord:
    """Process a GPT2LMHeadModel's weights in place (see the module's docstring); what it removed, in float32."""
    transformer, d_model = model.transformer, model.config.n_embd
    n_heads = model.config.n_head
    record = ProcessingRecord(
        transformer.wte.weight.float().mean(1), transformer.wpe.weight.float().mean(1), [], [], [], [], []
    )

    def store(parameter: nn.Parameter, value: torch.Tensor) -> None:
        parameter.copy_(value.to(parameter.dtype))

    # The unembedding is GPT-2's embedding transposed: untied before the embedding is centred, and processed in
    # chunks of the vocabulary (in float32, so that half-precision weights are processed like float32 ones).
    tied = model.lm_head.weight  # [vocab, d_model]
    W_U = torch.empty_like(tied)
    b_U = torch.empty(tied.shape[0], dtype=torch.float32, device=tied.device)
    column_mean = torch.zeros(d_model, dtype=torch.float32, device=tied.device)
    chunks = torch.arange(tied.shape[0], device=tied.device).split(UNEMBED_CHUNK)
    for rows in chunks:
        chunk = tied[rows].float()
        b_U[rows] = chunk @ transformer.ln_f.bias.float()
        chunk = centred(chunk * transformer.ln_f.weight.float(), 1)  # ln_f folded; centred over d_model
        column_mean += chunk.sum(0) / tied.shape[0]
        W_U[rows] = chunk.to(W_U.dtype)
    for rows in chunks:
        W_U[rows] = (W_U[rows].float() - column_mean).to(W_U.dtype)  # centred over the vocabulary
    model.lm_head.weight = nn.Parameter(W_U)
    model.lm_head.bias = nn.Parameter((b_U - b_U.mean()).to(W_U.dtype))
    model.config.tie_word_embeddings = False
    reset_norm(transformer.ln_f)
    for embedding in (transformer.wte, transformer.wpe):
        store(embedding.weight, centred(embedding.weight.float(), 1))

    for block in transformer.h:
        attn, mlp = block.attn, block.mlp
        record.ln1.append((block.ln_1.weight.float().clone(), block.ln_1.bias.float().clone()))
        record.ln2.append((block.ln_2.weight.float().clone(), block.ln_2.bias.float().clone()))
        W, b = fold_norm(block.ln_1, attn.c_attn.weight.float(), attn.c_attn.bias.float())
        value_bias = b[2 * d_model :].clone()
        attn_mean = attn.c_proj.weight.float().mean(1)
        record.attn_mean.append((attn_mean, value_bias @ attn_mean + attn.c_proj.bias.float().mean()))
        record.value_bias.append(value_bias.reshape(n_heads, -1))
        record.mlp_mean.append((mlp.c_proj.weight.float().mean(1), mlp.c_proj.bias.float().mean()))
        W_O = centred(attn.c_proj.weight.float(), 1)
        b_O = centred(attn.c_proj.bias.float() + b[2 * d_model :] @ W_O, 0)  # the value bias, through W_O
        b[2 * d_model :] = 0
        store(attn.c_attn.weight, W)
        store(attn.c_attn.bias, b)
        store(attn.c_proj.weight, W_O)
        store(attn.c_proj.bias, b_O)
        W_in, b_in = fold_norm(block.ln_2, mlp.c_fc.weight.float(), mlp.c_fc.bias.float())
        store(mlp.c_fc.weight, W_in)
        store(mlp.c_fc.bias, b_in)
        store(mlp.c_proj.weight, centred(mlp.c_proj.weight.float(), 1))
        store(mlp.c_proj.bias, centred(mlp.c_proj.bias.float(), 0))
        reset_norm(block.ln_1)
        reset_norm(block.ln_2)
    return record
