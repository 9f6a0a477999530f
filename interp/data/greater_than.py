"""The greater-than dataset (Hanna, Liu & Variengien 2023) as the authors' code builds it (`hannamw/gpt2-greater-than`:
`dataset.py` `YearDataset`, `utils.py` `get_valid_years`), as an `interp.task.Task`.

A prompt is "The {noun} lasted from the year {XX}{YY} to the year {XX}": the next token is a two-digit year
"00".."99" (no leading space), and every year above YY is right. The metric is the authors' probability difference
PD = sum p(y > YY) - sum p(y <= YY) over the 100 year tokens ("prob-diff", `interp.task_metrics`). The corrupted
prompt (the authors' "01 dataset") puts "01" in YY's place, same noun and century.

As the authors' code does it:
- nouns: their 120 (`cache/potential_nouns.txt`, the same list as ACDC's `NOUNS`), each one token after a space;
- years: in each century, the years " XXYY" for YY 00..99 that tokenize as [" XX", "YY"], without the first and the
  last such year of the century (`get_valid_years`);
- sampling (`YearDataset(balanced=True)`): n nouns drawn with replacement (`random.choices`), then prompt i gets
  YY = 02..98 in turn (cycling) and a century drawn uniformly among the valid years with that YY
  (`random.randrange`). The calls are the authors', in their order, on our own `random.Random(seed)`: the authors
  draw from Python's unseeded global generator;
- prepend_bos: the authors' circuit scripts (`eos=True`) prefix "<|endoftext|> ", whose space joins "The": the
  tokens are [BOS, " The", ...]. With `prepend_bos` the prompts here start with that space, so the task's own
  tokenization (BOS added by `Task.tokenize`) gives exactly those tokens; without it they start "The" (ACDC).

Where this differs from the authors' code: their scripts scan the centuries 10..18 (`get_valid_years(tokenizer,
1000, 1900)`), but " 1001" tokenizes as [" 100", "1"], so century 10's 01-corruption is not a two-digit swap.
CENTURIES here are ACDC's 11..17, and a century whose " XX01" is not [" XX", "01"] is refused. ACDC
(`acdc/greaterthan/utils.py`) also differs from the authors: it checks only YY 02..98 before dropping the first and
last year, draws years uniformly (torch seed 54, not cycling YY), adds no BOS, and drops the second "the year"
(`template="acdc"`: "... from the year 1732 to 17").

Each pair's group is its YY: the answer sets depend on YY alone, so prompts that share it are the same question
(per-group means, resampling by group), and `task_years` reads it back (from the wrong answers, so that it also
reads EAP-IG's greater-than CSV). The task's `word_idxs` name the positions of the first century ("XX1"), of YY and
of the last token ("END", the second century) for the task's own prepend_bos.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import InterpError
from interp.task import Pair, Task, years
from interp.tokens import encode, gpt2_tokenizer

NOUNS = (
    "abduction", "accord", "affair", "agreement", "appraisal", "assaults", "assessment", "attack", "attempts",
    "campaign", "captivity", "case", "challenge", "chaos", "clash", "collaboration", "coma", "competition",
    "confrontation", "consequence", "conspiracy", "construction", "consultation", "contact", "contract",
    "convention", "cooperation", "custody", "deal", "decline", "decrease", "demonstrations", "development",
    "disagreement", "disorder", "dispute", "domination", "dynasty", "effect", "effort", "employment", "endeavor",
    "engagement", "epidemic", "evaluation", "exchange", "existence", "expansion", "expedition", "experiments", "fall",
    "fame", "flights", "friendship", "growth", "hardship", "hostility", "illness", "impact", "imprisonment",
    "improvement", "incarceration", "increase", "insurgency", "invasion", "investigation", "journey", "kingdom",
    "marriage", "modernization", "negotiation", "notoriety", "obstruction", "operation", "order", "outbreak",
    "outcome", "overhaul", "patrols", "pilgrimage", "plague", "plan", "practice", "process", "program", "progress",
    "project", "pursuit", "quest", "raids", "reforms", "reign", "relationship", "retaliation", "riot", "rise",
    "rivalry", "romance", "rule", "sanctions", "shift", "siege", "slump", "stature", "stint", "strikes", "study",
    "test", "testing", "tests", "therapy", "tour", "tradition", "treaty", "trial", "trip", "unemployment", "voyage",
    "warfare", "work",
)  # fmt: skip
CENTURIES = tuple(range(11, 18))
SAMPLED_YY = range(2, 99)  # the YY the prompts cycle through
CORRUPT_YY = 1
TEMPLATES = {
    "authors": "The {noun} lasted from the year {xx}{yy} to the year {xx}",
    "acdc": "The {noun} lasted from the year {xx}{yy} to {xx}",
}


def splits_as_year(year: int, tokenizer=None) -> bool:
    """Whether " XXYY" is two tokens, the second the two digits (the authors' `is_valid_year`)."""
    tokenizer = tokenizer or gpt2_tokenizer()
    pieces = tokenizer.convert_ids_to_tokens(encode(f" {year}", tokenizer))
    return len(pieces) == 2 and len(pieces[1]) == 2


def valid_years(centuries: Sequence[int] = CENTURIES, tokenizer=None) -> list[int]:
    """The years prompts are drawn from, ascending: per century, those " XXYY" (YY 00..99) that split as
    [" XX", "YY"], less the first and the last of them (the authors' `get_valid_years`)."""
    kept = []
    for century in centuries:
        splitting = [year for year in range(100 * century, 100 * century + 100) if splits_as_year(year, tokenizer)]
        kept += splitting[1:-1]
    return kept


def check_centuries(centuries: Sequence[int], tokenizer=None) -> None:
    """Refuse centuries whose 01-corruption is not the same two-token split (" 1001" is [" 100", "1"])."""
    bad = [century for century in centuries if not splits_as_year(100 * century + CORRUPT_YY, tokenizer)]
    if bad:
        raise InterpError(
            f"the 01-corruption of centuries {bad} does not tokenize as [' XX', '01']: greater-than prompts need "
            "the clean and corrupted years to be the same two tokens"
        )


def sample_years(n: int, rng: random.Random, pool: Sequence[int]) -> list[int]:
    """Prompt i gets YY = 02..98 in turn and a year with that YY drawn from `pool` (the authors' balanced draw)."""
    chosen = []
    for i in range(n):
        yy = SAMPLED_YY[i % len(SAMPLED_YY)]
        candidates = [year for year in pool if year % 100 == yy]
        if not candidates:
            raise InterpError(f"no valid year ends in {yy:02d} in the centuries asked for")
        chosen.append(candidates[rng.randrange(len(candidates))])
    return chosen


def greater_than_task(
    n: int,
    seed: int = 0,
    tokenizer=None,
    template: str = "authors",
    prepend_bos: bool = True,
    centuries: Sequence[int] = CENTURIES,
) -> Task:
    """n greater-than pairs (clean year, its 01-corruption) with the years above YY as answers ("YY+1".."99") and
    "00".."YY" as wrong answers, group the century, metric "prob-diff"; `template` "authors" or "acdc" (no second "the
    year"); with `prepend_bos` the prompts carry the space the authors' "<|endoftext|> " prefix gives "The"."""
    if n < 1:
        raise InterpError(f"a greater-than task needs at least one prompt, not {n}")
    if template not in TEMPLATES:
        raise InterpError(f"unknown greater-than template {template!r}; use one of {', '.join(TEMPLATES)}")
    tokenizer = tokenizer or gpt2_tokenizer()
    check_centuries(centuries, tokenizer)
    rng = random.Random(seed)
    nouns = rng.choices(NOUNS, k=n)  # before the years, as the authors draw them
    lead = " " if prepend_bos else ""

    def prompt(noun: str, year: int, yy: int) -> str:
        return lead + TEMPLATES[template].format(noun=noun, xx=year // 100, yy=f"{yy:02d}")

    pairs = [
        Pair(
            prompt(noun, year, year % 100),
            prompt(noun, year, CORRUPT_YY),
            years(year % 100 + 1, 100),
            years(0, year % 100 + 1),
            group=year // 100,  # the century: strata of n/7 prompts for the bootstrap (a YY has one or two)
            where=f"prompts[{i}]",
        )
        for i, (noun, year) in enumerate(zip(nouns, sample_years(n, rng, valid_years(centuries, tokenizer))))
    ]
    return Task(
        "greater-than",
        pairs,
        "interp.data.greater_than",
        prepend_bos=prepend_bos,
        metric="prob-diff",
        word_idxs=word_positions(template, prepend_bos, tokenizer),
    )


def word_positions(template: str, prepend_bos: bool, tokenizer) -> dict[str, int]:
    """Token positions of the first century, of YY and of the last token; every prompt has the same (each noun
    is one token, each year two)."""
    lead = " " if prepend_bos else ""
    before_yy = encode(lead + TEMPLATES[template].split("{yy}")[0].format(noun=NOUNS[0], xx=17), tokenizer)
    whole = encode(lead + TEMPLATES[template].format(noun=NOUNS[0], xx=17, yy="32"), tokenizer)
    return {
        "XX1": len(before_yy) - 1 + prepend_bos,
        "YY": len(before_yy) + prepend_bos,
        "END": len(whole) - 1 + prepend_bos,
    }


def task_years(task: Task) -> list[int]:
    """Each pair's YY, read from its wrong answers ("00".."YY"): greater_than_task's and EAP-IG's CSV alike."""
    return [int(pair.wrong_answers[-1]) for pair in task.pairs]


def year_token_ids(tokenizer=None) -> list[int]:
    """The ids of the 100 year tokens "00".."99", in order."""
    tokenizer = tokenizer or gpt2_tokenizer()
    return [encode(year, tokenizer)[0] for year in years(0, 100)]


def cutoff_sharpness(year_values: Float[Tensor, "n 100"], yy: Int[Tensor, " n"]) -> Float[Tensor, " n"]:
    """value(YY+1) - value(YY-1) of per-year values (columns "00".."99"): the authors' cutoff sharpness, which
    their code takes of logits (`circuit_discovery.py`) and of probabilities (`big_ds_experiments.py`, GPT-2
    small: 0.059)."""
    rows = torch.arange(len(year_values), device=year_values.device)
    yy = torch.as_tensor(yy, device=year_values.device)
    return year_values[rows, yy + 1] - year_values[rows, yy - 1]
