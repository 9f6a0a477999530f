"""The bundled GPT-2 tokenizer, single-token checks and token positions.

GPT-2's vocab.json and merges.txt ship inside the package, so tokenization never needs the network.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

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
