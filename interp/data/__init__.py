"""Data shipped with interp: the IOI vocabulary and the word-pair tables of the capital-city experiment.

Tables are TSV files with a header. Answers that split into several tokens are scored on their first token.
`world_capitals` is the authors' own table (Merullo et al.'s `world_capitals.csv`, 248 rows, unfiltered as their
code uses it: some answers share a first token, Bolivia has two rows); the experiment reports its first-token
collisions instead of dropping rows. The other tables were made for interp and checked against the GPT-2
tokenizer: rows whose first answer token is shared with another row, or equals the first token of the question
word, were dropped, so that a first-token hit is unambiguous. `capitals` (107 rows) is also the organism's.
"""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path

DATA_DIR = Path(__file__).parent
TABLES = {
    "capitals": "capitals.tsv",
    "world_capitals": "world_capitals.tsv",
    "uppercase": "uppercase.tsv",
    "past_tense": "past_tense.tsv",
}


@cache
def load_pairs(table: str) -> tuple[tuple[str, str], ...]:
    """(argument, answer) pairs of a table: `capitals` and `world_capitals` (country, capital), `uppercase`,
    `past_tense`."""
    if table not in TABLES:
        from interp.errors import InterpError

        raise InterpError(f"unknown table {table!r}; known: {', '.join(TABLES)}")
    with open(DATA_DIR / TABLES[table], newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    return tuple((a, b) for a, b in rows[1:])
