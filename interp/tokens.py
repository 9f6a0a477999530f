"""Tokenization that does not depend on where the tokenizer came from.

GPT-2's vocab.json and merges.txt ship inside the package, so tokenization never needs the network. A model may
carry another copy of the same tokenizer (a checkpoint directory's, a hub snapshot's), and TransformerBridge
reloads those with `add_bos_token=True`, so calling the tokenizer directly would prepend BOS for some sources and
not others. Here text is always encoded without special tokens, and a BOS token is added only when the caller
asks for it (`prepend_bos`, recorded in every results file): the ids are the same whatever the source.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import torch

from interp.errors import InterpError

TOKENIZER_DIR = Path(__file__).parent / "assets" / "gpt2-tokenizer"
GPT2_BOS = 50256  # <|endoftext|>: GPT-2's BOS, EOS and padding token


@lru_cache(maxsize=1)
def gpt2_tokenizer():
    """The GPT-2 BPE tokenizer from the package's own files (no download)."""
    from transformers import GPT2TokenizerFast

    # from_pretrained on a directory: the (vocab_file=, merges_file=) idiom builds an empty tokenizer in
    # transformers 5.x.
    return GPT2TokenizerFast.from_pretrained(str(TOKENIZER_DIR))


def encode(text: str, tokenizer=None) -> list[int]:
    """Token ids of `text` and nothing else: no BOS, whatever the tokenizer was configured to add."""
    return (tokenizer or gpt2_tokenizer())(text, add_special_tokens=False)["input_ids"]


def bos_id(tokenizer=None) -> int:
    tokenizer = tokenizer or gpt2_tokenizer()
    return GPT2_BOS if tokenizer.bos_token_id is None else tokenizer.bos_token_id


def prompt_ids(text: str, tokenizer=None, *, prepend_bos: bool) -> list[int]:
    """Token ids of a prompt, with BOS first exactly when `prepend_bos`."""
    return [bos_id(tokenizer)] * prepend_bos + encode(text, tokenizer)


def prompt_tokens(model, prompt: str, *, prepend_bos: bool) -> torch.Tensor:
    """[1, pos] tokens of a prompt on the model's device, or a clear error when it is empty or longer than the
    model's context."""
    if not prompt or not prompt.strip():
        raise InterpError("the prompt is empty")
    ids = prompt_ids(prompt, model.tokenizer, prepend_bos=prepend_bos)
    if len(ids) > model.cfg.n_ctx:
        raise InterpError(f"the prompt is {len(ids)} tokens; the model's context is {model.cfg.n_ctx}")
    return torch.tensor([ids], device=model.cfg.device)


def str_tokens(ids: Sequence[int] | torch.Tensor, tokenizer=None) -> list[str]:
    """Each id decoded on its own (BOS shows as '<|endoftext|>')."""
    tokenizer = tokenizer or gpt2_tokenizer()
    return [tokenizer.decode([i]) for i in torch.as_tensor(ids).tolist()]


def single_token_id(word: str, tokenizer=None, what: str = "token") -> int:
    """The id of `word` if it is exactly one token, else a clear error naming the word and its split."""
    tokenizer = tokenizer or gpt2_tokenizer()
    ids = encode(word, tokenizer)
    if len(ids) != 1:
        hint = ""
        if not word.startswith(" ") and len(encode(" " + word, tokenizer)) == 1:
            hint = f" (did you mean {' ' + word!r}, with the leading space of a word inside a sentence?)"
        raise InterpError(f"{what} {word!r} is {len(ids)} GPT-2 tokens {str_tokens(ids, tokenizer)}, not one{hint}")
    return ids[0]


def check_single_tokens(words: Sequence[str], what: str, tokenizer=None, shown: int = 3) -> None:
    """Every word must be one token; one short error for all the offenders (their count and the first few)."""
    splits = {word: encode(word, tokenizer) for word in words}
    bad = [word for word, ids in splits.items() if len(ids) != 1]
    if bad:
        listed = "; ".join(
            f"{word!r} is {len(splits[word])} tokens {str_tokens(splits[word], tokenizer)}" for word in bad[:shown]
        )
        more = f" and {len(bad) - shown} more" if len(bad) > shown else ""
        raise InterpError(f"{len(bad)} of {len(words)} {what}s are not single GPT-2 tokens: {listed}{more}")


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
            chunk = indices[start : start + batch_size]
            yield chunk, torch.stack([torch.as_tensor(rows[i]) for i in chunk])
