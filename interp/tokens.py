"""The bundled GPT-2 tokenizer, single-token checks and token positions.

GPT-2's vocab.json and merges.txt ship inside the package, so tokenization never needs the network.
"""
from __future__ import annotations

from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import torch

from interp.errors import InterpError

TOKENIZER_DIR = Path(__file__).parent / "assets" / "gpt2-tokenizer"


@lru_cache(maxsize=1)
def gpt2_tokenizer():
    """The GPT-2 BPE tokenizer from the package's own files (no download)."""
    from transformers import GPT2TokenizerFast

    # from_pretrained on a directory: the (vocab_file=, merges_file=) idiom builds an empty tokenizer in
    # transformers 5.x.
    return GPT2TokenizerFast.from_pretrained(str(TOKENIZER_DIR))


def encode(text: str, tokenizer=None) -> list[int]:
    """Token ids of `text`, without a BOS token."""
    return (tokenizer or gpt2_tokenizer())(text)["input_ids"]


def single_token_id(word: str, tokenizer=None, what: str = "token") -> int:
    """The id of `word` if it is exactly one token, else a clear error naming the word and its split."""
    tokenizer = tokenizer or gpt2_tokenizer()
    ids = encode(word, tokenizer)
    if len(ids) != 1:
        pieces = [tokenizer.decode([i]) for i in ids]
        hint = ""
        if not word.startswith(" ") and len(encode(" " + word, tokenizer)) == 1:
            hint = f" (did you mean {' ' + word!r}, with the leading space of a word inside a sentence?)"
        raise InterpError(f"{what} {word!r} is {len(ids)} GPT-2 tokens {pieces}, not one{hint}")
    return ids[0]


def first_token_id(word: str, tokenizer=None) -> int:
    """The first token of `word`: how multi-token answers are scored (the model must start them right)."""
    ids = encode(word, tokenizer)
    if not ids:
        raise InterpError(f"{word!r} is empty: it has no first token")
    return ids[0]


def batches_by_length(rows: Sequence[Sequence[int]], batch_size: int = 32) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(indices into `rows`, tokens [batch, pos]) for groups of equal-length token rows: no padding, and
    position -1 is every row's last token."""
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_length[len(row)].append(i)
    for length in sorted(by_length):
        indices = by_length[length]
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            yield chunk, torch.stack([torch.as_tensor(rows[i]) for i in chunk])
