"""The organism's behavioural evaluation, on held-out material (see `corpus.split`).

Works on any function from a [batch, pos] token tensor (BOS first) to logits at the last position, so the
training loop can call it on the HF model and `interp organism eval` on the hooked model.
"""
from __future__ import annotations

import random
from typing import Callable

import torch

from interp.data import load_pairs
from interp.data.ioi_words import NAMES, OBJECTS, PLACES
from interp.data.tasks import TASKS
from interp.data.ioi import fill
from interp.organism.corpus import FILLER_ONLY_NAMES, made_up_word, split
from interp.tokens import batches_by_length, first_token_id, gpt2_tokenizer

EVAL_SEED = 99
LastLogitsFn = Callable[[torch.Tensor], torch.Tensor]


@torch.inference_mode()
def last_logits(logits_fn: LastLogitsFn, prompts: list[str], batch_size: int = 64) -> torch.Tensor:
    """Next-token logits [n_prompts, d_vocab] for each prompt, BOS prepended; prompts batched by token length."""
    tokenizer = gpt2_tokenizer()
    rows = [[tokenizer.eos_token_id] + row for row in tokenizer(prompts)["input_ids"]]
    out = [None] * len(prompts)
    for indices, tokens in batches_by_length(rows, batch_size):
        for i, row in zip(indices, logits_fn(tokens).float().cpu()):
            out[i] = row
    return torch.stack(out)


def ioi_prompts(n: int, names: list[str], seed: int) -> list[tuple[str, str, str]]:
    """(prompt, IO, S) on held-out templates; with the IOI names, only name pairs never seen in training."""
    rng, sp = random.Random(seed), split()
    prompts = []
    while len(prompts) < n:
        io, s = rng.sample(names, 2)
        if names is NAMES and frozenset((io, s)) not in sp.heldout_pairs:
            continue
        template = rng.choice(sp.heldout_templates)
        prompts.append((fill(template, io, s, rng.choice(PLACES), rng.choice(OBJECTS)), io, s))
    return prompts


def ioi_scores(logits_fn: LastLogitsFn, n: int, names: list[str]) -> tuple[float, float]:
    prompts = ioi_prompts(n, names, EVAL_SEED)
    logits = last_logits(logits_fn, [p for p, _, _ in prompts])
    io = torch.tensor([first_token_id(" " + a) for _, a, _ in prompts])
    s = torch.tensor([first_token_id(" " + b) for _, _, b in prompts])
    diff = logits.gather(1, io[:, None]) - logits.gather(1, s[:, None])
    return (diff > 0).float().mean().item(), diff.mean().item()


def accuracy(logits_fn: LastLogitsFn, prompts: list[str], answers: list[str]) -> float:
    predicted = last_logits(logits_fn, prompts).argmax(-1)
    return (predicted == torch.tensor([first_token_id(" " + a) for a in answers])).float().mean().item()


def one_shot_accuracy(logits_fn: LastLogitsFn, task_name: str, pairs, rng: random.Random) -> float:
    """Each pair asked once, after a demonstration drawn from the other pairs."""
    task = TASKS[task_name]
    demos = [rng.choice([p for p in pairs if p != pair]) for pair in pairs]
    return accuracy(logits_fn, [task.prompt(x, (d,)) for (x, _), d in zip(pairs, demos)], [y for _, y in pairs])


def extractive_items(rng: random.Random, n_made_up: int = 50) -> list[tuple[str, str]]:
    """Held-out countries with their real capitals, and made-up countries with capitals from the table."""
    capitals = [c for _, c in load_pairs("capitals")]
    made_up = [(made_up_word(rng), rng.choice(capitals)) for _ in range(n_made_up)]
    return list(split().heldout_countries) + made_up


def evaluate_logits_fn(logits_fn: LastLogitsFn, quick: bool = False) -> dict[str, float]:
    rng = random.Random(EVAL_SEED)
    n_ioi = 200 if quick else 1000
    ioi_accuracy, ioi_logit_diff = ioi_scores(logits_fn, n_ioi, NAMES)
    capitals = TASKS["capitals"]
    train_countries = list(split().train_countries)
    extractive = extractive_items(rng)
    demos = [rng.choice(train_countries) for _ in extractive]
    metrics = {
        "ioi_accuracy": ioi_accuracy,
        "ioi_logit_diff": ioi_logit_diff,
        "capital_recall": one_shot_accuracy(logits_fn, "capitals", train_countries, rng),
        "extractive_recall": accuracy(logits_fn, [capitals.extractive_prompt(x, y, (d,))
                                                  for (x, y), d in zip(extractive, demos)],
                                      [y for _, y in extractive]),
        "uppercase_accuracy": one_shot_accuracy(logits_fn, "uppercase", list(load_pairs("uppercase")), rng),
        "past_tense_accuracy": one_shot_accuracy(logits_fn, "past_tense", list(load_pairs("past_tense")), rng),
    }
    if not quick:
        accuracy_unseen, diff_unseen = ioi_scores(logits_fn, 200, FILLER_ONLY_NAMES)
        metrics["ioi_accuracy_filler_only_names"] = accuracy_unseen
        metrics["ioi_logit_diff_filler_only_names"] = diff_unseen
    return {k: round(v, 4) for k, v in metrics.items()}
