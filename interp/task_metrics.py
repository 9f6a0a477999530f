"""Named metrics of a task, read at each prompt's last position (`TaskTokens.end`), one value per prompt.

    logit-diff  mean logit of the answers - mean logit of the wrong answers (one each: the IOI logit difference);
                reads only those columns, so the engine unembeds a few hundred columns instead of 50,257
    prob-diff   sum of the answers' probabilities - sum of the wrong answers' (greater-than's PD)
    logprob     log of the answers' total probability (one answer: its log-probability)
    kl          KL(clean || run) of the next-token distributions (ACDC's metric): 0 on the clean run, lower is
                closer to it

Probabilities need the whole vocabulary, but only at one position per prompt.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import InterpError
from interp.metric_reader import Metric
from interp.task import TaskTokens

METRICS = ("logit-diff", "prob-diff", "logprob", "kl")
DESCRIPTIONS = {
    "logit-diff": "mean logit of the answers - mean logit of the wrong answers, at each prompt's last position",
    "prob-diff": "sum of the answers' probabilities - sum of the wrong answers', at each prompt's last position",
    "logprob": "log-probability of the answers (their total), at each prompt's last position",
    "kl": "KL(clean || run) of the next-token distribution at each prompt's last position (0 on the clean run)",
}
LOWER_IS_BETTER = frozenset({"kl"})


def task_metric(name: str, tokens: TaskTokens, model=None, per_prompt: bool = True) -> Metric:
    """The metric `name` of a tokenized task; "kl" runs `model` once on the clean prompts for its reference."""
    if name not in METRICS:
        raise InterpError(f"unknown metric {name!r}; use one of {', '.join(METRICS)}")

    def reduce(values: Tensor) -> Tensor:
        return values if per_prompt else values.mean()

    answers, wrong = tokens.answers, tokens.wrong
    if name == "logit-diff":
        columns = torch.unique(torch.cat([answers[answers >= 0], wrong[wrong >= 0]]))
        answer_columns, wrong_columns = (torch.searchsorted(columns, ids.clamp(min=0)) for ids in (answers, wrong))

        def logit_diff(logits: Float[Tensor, "batch 1 n_columns"]) -> Tensor:
            final = logits[:, 0]
            return reduce(set_mean(final, answer_columns, answers >= 0) - set_mean(final, wrong_columns, wrong >= 0))

        return Metric(logit_diff, tokens.end, columns)
    if name == "kl":
        if model is None:
            raise InterpError("the kl metric needs the model, to run the clean prompts for its reference")
        reference = final_log_probs(model, tokens.clean, tokens.end)

        def kl(logits: Float[Tensor, "batch 1 vocab"]) -> Tensor:
            clean = reference.to(logits.device)
            return reduce((clean.exp() * (clean - logits[:, 0].log_softmax(-1))).sum(-1))

        return Metric(kl, tokens.end, None)

    def probability(logits: Float[Tensor, "batch 1 vocab"]) -> Tensor:
        log_probs = logits[:, 0].log_softmax(-1)
        if name == "logprob":
            return reduce(set_logsumexp(log_probs, answers))
        return reduce(set_sum(log_probs.exp(), answers) - set_sum(log_probs.exp(), wrong))

    return Metric(probability, tokens.end, None)


def set_mean(values: Tensor, columns: Tensor, mask: Tensor) -> Tensor:
    mask = mask.to(values.device)
    chosen = values.gather(1, columns.to(values.device)) * mask
    return chosen.sum(-1) / mask.sum(-1)


def set_sum(values: Tensor, ids: Tensor) -> Tensor:
    ids = ids.to(values.device)
    return (values.gather(1, ids.clamp(min=0)) * (ids >= 0)).sum(-1)


def set_logsumexp(log_probs: Tensor, ids: Tensor) -> Tensor:
    ids = ids.to(log_probs.device)
    return log_probs.gather(1, ids.clamp(min=0)).masked_fill(ids < 0, float("-inf")).logsumexp(-1)


def final_log_probs(
    model, tokens: Int[Tensor, "n pos"], end: Int[Tensor, " n"], batch_size: int = 32
) -> Float[Tensor, "n vocab"]:
    """Log-probabilities of the next token at each prompt's last position (`end`)."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(tokens), batch_size):
            rows = slice(start, start + batch_size)
            logits = model(tokens[rows].to(model.cfg.device))
            last = end[rows].to(logits.device)
            out.append(logits[torch.arange(len(last), device=logits.device), last].float().log_softmax(-1).cpu())
    return torch.cat(out)
