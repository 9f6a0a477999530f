"""Word vectors: the rows of GPT-2's embedding (W_E) or of its unembedding (the columns of W_U), compared by cosine.

`nearest` lists the tokens closest to a word; `analogy` answers a : b :: c : ? with the vector b - a + c (Mikolov et
al.) and says where the expected word ranks among the whole vocabulary, the three question words excluded (they
are usually nearest, and every quoted analogy leaves them out). A word GPT-2 splits into several tokens is
represented by its first token, and the result names the words that split.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import InterpError
from interp.tokens import encode

SPACES = ("embed", "unembed")


def token_vectors(model, space: str = "embed") -> Float[Tensor, "vocab d_model"]:
    """Every token's vector in float32: its embedding, or its unembedding direction."""
    if space not in SPACES:
        raise InterpError(f"unknown word-vector space {space!r}; use {' or '.join(SPACES)}")
    return (model.W_E if space == "embed" else model.W_U.T).detach().float()


def word_token(model, word: str) -> tuple[int, bool]:
    """The id that stands for `word` (its first token) and whether the word splits into several tokens."""
    ids = encode(word, model.tokenizer)
    if not ids:
        raise InterpError(f"{word!r} is empty: it has no token")
    return ids[0], len(ids) > 1


def similarities(vectors: Tensor, query: Float[Tensor, " d_model"]) -> Float[Tensor, " vocab"]:
    return torch.nn.functional.cosine_similarity(vectors, query[None], dim=-1)


def ranked(model, similarity: Tensor, excluded: Sequence[int], k: int) -> list[tuple[str, float]]:
    similarity = similarity.clone()
    similarity[list(excluded)] = -float("inf")
    values, ids = similarity.topk(k)
    return [(model.tokenizer.decode([i]), v) for i, v in zip(ids.tolist(), values.tolist())]


@torch.inference_mode()
def nearest(model, word: str, k: int = 10, space: str = "embed") -> dict:
    """The k tokens closest to `word` (the word's own token excluded)."""
    token, split = word_token(model, word)
    vectors = token_vectors(model, space)
    return {
        "word": word,
        "space": space,
        "split": [word] if split else [],
        "nearest": ranked(model, similarities(vectors, vectors[token]), [token], k),
    }


@torch.inference_mode()
def analogy(model, a: str, b: str, c: str, expected: str | None = None, k: int = 5, space: str = "embed") -> dict:
    """a : b :: c : ?, answered by the tokens closest to b - a + c (the three excluded); with `expected`, its rank
    among every other token (1 = nearest) and its cosine."""
    tokens = {word: word_token(model, word) for word in (a, b, c) + ((expected,) if expected else ())}
    vectors = token_vectors(model, space)
    question = [tokens[word][0] for word in (a, b, c)]
    similarity = similarities(vectors, vectors[question[1]] - vectors[question[0]] + vectors[question[2]])
    result = {
        "query": f"{b.strip()} - {a.strip()} + {c.strip()}",
        "space": space,
        "split": [word for word, (_, split) in tokens.items() if split],
        "nearest": ranked(model, similarity, question, k),
    }
    if expected:
        target = tokens[expected][0]
        others = similarity.clone()
        others[question] = -float("inf")
        result.update(
            expected=expected,
            expected_cosine=float(similarity[target]),
            expected_rank=1 + int((others > others[target]).sum()),
        )
    return result
