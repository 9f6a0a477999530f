"""The organism's behavioural evaluation, on held-out material (see `corpus.split`).

Works on any function from a [batch, pos] token tensor (BOS first) to logits at the last position, so the
training loop can call it on the HF model and `interp organism eval` on the hooked model.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch

from interp.data import load_pairs
from interp.data.ioi import fill
from interp.data.ioi_words import OBJECTS, ORGANISM_NAMES, PLACES
from interp.data.tasks import TASKS
from interp.organism.corpus import FILLER_ONLY_NAMES, made_up_word, split
from interp.tokens import batches_by_length, first_token_id, gpt2_tokenizer

EVAL_SEED = 99
VALIDATION_SEED = 7
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


def ioi_prompts(n: int, names: list[str], seed: int, templates, unseen_pairs: bool) -> list[tuple[str, str, str]]:
    """(prompt, IO, S) from `templates`; with `unseen_pairs`, only name pairs never seen together in training."""
    rng, heldout_pairs = random.Random(seed), split().heldout_pairs
    prompts = []
    while len(prompts) < n:
        io, s = rng.sample(names, 2)
        if unseen_pairs and frozenset((io, s)) not in heldout_pairs:
            continue
        template = rng.choice(templates)
        prompts.append((fill(template, io, s, rng.choice(PLACES), rng.choice(OBJECTS)), io, s))
    return prompts


def ioi_scores(logits_fn: LastLogitsFn, prompts: list[tuple[str, str, str]]) -> tuple[float, float]:
    """(accuracy, mean logit difference IO - S) at the end of each (prompt, IO, S)."""
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


def extractive_recall(logits_fn: LastLogitsFn, items: list[tuple[str, str]], rng: random.Random) -> float:
    """Country x whose capital y is stated in the prompt, asked after a one-shot demonstration."""
    capitals, train_countries = TASKS["capitals"], list(split().train_countries)
    demos = [rng.choice(train_countries) for _ in items]
    return accuracy(
        logits_fn, [capitals.extractive_prompt(x, y, (d,)) for (x, y), d in zip(items, demos)], [y for _, y in items]
    )


def evaluate_logits_fn(logits_fn: LastLogitsFn) -> dict[str, float]:
    """The organism's scores: IOI on held-out templates with unseen name pairs, the tasks, extractive recall."""
    rng, sp = random.Random(EVAL_SEED), split()
    ioi_accuracy, ioi_logit_diff = ioi_scores(
        logits_fn, ioi_prompts(1000, ORGANISM_NAMES, EVAL_SEED, sp.heldout_templates, unseen_pairs=True)
    )
    extractive = extractive_recall(logits_fn, extractive_items(rng), rng)
    metrics = {
        "ioi_accuracy": ioi_accuracy,
        "ioi_logit_diff": ioi_logit_diff,
        "capital_recall": one_shot_accuracy(logits_fn, "capitals", list(sp.train_countries), rng),
        "extractive_recall": extractive,
        "uppercase_accuracy": one_shot_accuracy(logits_fn, "uppercase", list(load_pairs("uppercase")), rng),
        "past_tense_accuracy": one_shot_accuracy(logits_fn, "past_tense", list(load_pairs("past_tense")), rng),
    }
    accuracy_unseen, diff_unseen = ioi_scores(
        logits_fn, ioi_prompts(200, FILLER_ONLY_NAMES, EVAL_SEED, sp.heldout_templates, unseen_pairs=False)
    )
    metrics["ioi_accuracy_filler_only_names"] = accuracy_unseen
    metrics["ioi_logit_diff_filler_only_names"] = diff_unseen
    return {k: round(v, 4) for k, v in metrics.items()}


def validation_scores(logits_fn: LastLogitsFn) -> dict[str, float]:
    """What training selects its checkpoint on, disjoint from the evaluation: IOI on the validation templates,
    and extractive recall on other made-up countries. The other tasks are memorised early and not selected on."""
    rng = random.Random(VALIDATION_SEED)
    prompts = ioi_prompts(300, ORGANISM_NAMES, VALIDATION_SEED, split().validation_templates, unseen_pairs=False)
    ioi_accuracy, ioi_logit_diff = ioi_scores(logits_fn, prompts)
    capitals = [c for _, c in load_pairs("capitals")]
    evaluated = {x for x, _ in extractive_items(random.Random(EVAL_SEED))}
    made_up = [(x, rng.choice(capitals)) for x in (made_up_word(rng) for _ in range(100)) if x not in evaluated]
    scores = {
        "val_ioi_accuracy": ioi_accuracy,
        "val_ioi_logit_diff": ioi_logit_diff,
        "val_extractive_recall": extractive_recall(logits_fn, made_up, rng),
    }
    return {k: round(v, 4) for k, v in scores.items()}
