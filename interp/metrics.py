"""Metrics of logits read at one position per prompt (answer vs wrong token), and their normalisation.

Logit differences and probabilities are unaffected by the per-position constant that weight processing adds
to logits, so these are comparable with the unprocessed model.
"""

from __future__ import annotations

import torch


def at_positions(logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """[batch, pos, vocab] -> [batch, vocab]: each prompt's logits at its own position."""
    return logits[torch.arange(len(logits), device=logits.device), positions.to(logits.device)]


def logit_diffs(
    logits: torch.Tensor, answer_ids: torch.Tensor, wrong_ids: torch.Tensor, positions: torch.Tensor | None = None
) -> torch.Tensor:
    """Per prompt: logit(answer) - logit(wrong), at `positions` (the last position when None)."""
    final = logits[:, -1] if positions is None else at_positions(logits, positions)
    index = torch.arange(len(final), device=final.device)
    return final[index, answer_ids.to(final.device)] - final[index, wrong_ids.to(final.device)]


def answer_probs(logits: torch.Tensor, answer_ids: torch.Tensor, positions: torch.Tensor | None = None):
    """Per prompt: softmax probability of the answer token (full vocabulary)."""
    final = logits[:, -1] if positions is None else at_positions(logits, positions)
    return final.float().softmax(-1)[torch.arange(len(final), device=final.device), answer_ids.to(final.device)]


def normalised(value, clean: float, corrupt: float):
    """0 at the corrupted run's value, 1 at the clean run's: the fraction of the effect a patch restores."""
    return (value - corrupt) / (clean - corrupt)


def token_ranks(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Rank of each id among its row's logits (1 = top). logits [n, vocab], ids [n] or [n, k] -> ids' shape."""
    chosen = logits.gather(-1, ids if ids.dim() == 2 else ids[:, None])
    ranks = (logits[:, None, :] > chosen[:, :, None]).sum(-1) + 1
    return ranks if ids.dim() == 2 else ranks[:, 0]
