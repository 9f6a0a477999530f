"""Metrics as the patching engine reads them: a function of the logits at a few positions per prompt and a few
vocabulary columns (`Metric`), resolved for one batch (`Reader`). Saying what a metric reads is what lets the
engine skip most of the last layer and of the unembedding (`interp.engine`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import InterpError


@dataclass(frozen=True)
class Metric:
    """A function of the logits at a few positions per prompt and, optionally, a few vocabulary columns, to a scalar
    (the mean over prompts) or to one value per prompt.

    `fn` receives logits[batch, n_read, n_columns]: the positions `positions` of each prompt (an int for every
    prompt, one int per prompt, or a [batch, n_read] tensor; negative counts from the end; None = every position)
    and the columns `token_ids` in that order (None = the whole vocabulary). Saying what it reads is what lets the
    engine skip most of the last layer and of the unembedding. `fn` must be differentiable for attribution patching.
    """

    fn: Callable[[Float[Tensor, "batch n_read n_columns"]], Float[Tensor, ""]]
    positions: int | Sequence[int] | Tensor | None = -1
    token_ids: Sequence[int] | Tensor | None = None


def logit_diff_metric(
    answer_ids: int | Sequence[int] | Tensor,
    wrong_ids: int | Sequence[int] | Tensor,
    positions: int | Sequence[int] | Tensor = -1,
    per_prompt: bool = False,
) -> Metric:
    """Mean over prompts of logit(answer) - logit(wrong) at `positions` (one id for all prompts, or one per prompt);
    with `per_prompt`, one value per prompt (every sweep then keeps a trailing prompt axis, whose mean is the grid
    of the mean metric).

    Logit differences are unchanged by the bridge's weight processing, which shifts each position's logits by a
    constant.
    """
    answers = torch.as_tensor(answer_ids, dtype=torch.long).reshape(-1)
    wrongs = torch.as_tensor(wrong_ids, dtype=torch.long).reshape(-1)
    if len(answers) != len(wrongs):
        raise InterpError(f"{len(answers)} answer tokens but {len(wrongs)} wrong tokens: give one of each per prompt")
    n_answers = len(answers)

    def logit_diff(logits: Float[Tensor, "batch n_read 2*n_answers"]) -> Float[Tensor, ""]:
        n_batch = logits.shape[0]
        if n_answers not in (1, n_batch):
            raise InterpError(
                f"the metric has {n_answers} answer tokens for {n_batch} prompts: give one, or one per prompt"
            )
        prompt = torch.arange(n_batch, device=logits.device)
        column = prompt % n_answers  # each prompt's own answer, or the one answer of all
        diffs = (logits[prompt, :, column] - logits[prompt, :, n_answers + column]).mean(-1)
        return diffs if per_prompt else diffs.mean()

    return Metric(logit_diff, positions, torch.cat([answers, wrongs]))


@dataclass
class Reader:
    """A metric resolved for one batch: absolute positions read per prompt, the columns read, the function."""

    positions: Int[Tensor, "batch n_read"]
    token_ids: Int[Tensor, " n_columns"] | None
    fn: Callable[[Tensor], Tensor]

    @property
    def n_pos_needed(self) -> int:
        """Positions after the last one read never influence the metric (causal attention)."""
        return int(self.positions.max()) + 1

    def __call__(self, logits: Float[Tensor, "batch n_read n_columns"]) -> Float[Tensor, ""] | Float[Tensor, " batch"]:
        """The metric, in float32 whatever the model's dtype (a bfloat16 logit difference keeps ~3 digits): a
        scalar, or one value per prompt."""
        value = torch.as_tensor(self.fn(logits.float()))
        if value.ndim == 1 and len(value) == len(logits):
            return value
        if value.numel() != 1:
            raise InterpError(
                f"the metric must return a scalar or one value per prompt ({len(logits)}); it returned "
                f"shape {tuple(value.shape)}"
            )
        return value.reshape(())


def make_reader(metric: Metric | Callable, n_batch: int, n_pos: int, device) -> Reader:
    """Resolve a Metric (or a plain callable on the full logits [batch, pos, vocab]) for a [n_batch, n_pos] batch."""
    if not isinstance(metric, Metric):
        if not callable(metric):
            raise InterpError(f"the metric must be a Metric or a function of the logits, not {type(metric).__name__}")
        metric = Metric(metric, positions=None)
    if metric.positions is None:
        positions = torch.arange(n_pos).expand(n_batch, n_pos)
    else:
        positions = torch.as_tensor(metric.positions, dtype=torch.long)
        if positions.ndim == 0:
            positions = positions.expand(n_batch)
        if positions.ndim == 1:
            positions = positions[:, None]
        if positions.ndim != 2 or positions.shape[0] != n_batch:
            raise InterpError(
                f"the metric reads positions of shape {tuple(positions.shape)}; need one position, "
                f"one per prompt ({n_batch}), or [{n_batch}, n_read]"
            )
        bad = positions[(positions < -n_pos) | (positions >= n_pos)]
        if len(bad):
            raise InterpError(f"the metric reads position {int(bad[0])}, out of range for prompts of {n_pos} tokens")
        positions = positions % n_pos
    token_ids = None if metric.token_ids is None else torch.as_tensor(metric.token_ids, dtype=torch.long)
    return Reader(positions.to(device), None if token_ids is None else token_ids.to(device), metric.fn)
