"""Around the capital-city experiment (Merullo et al.): the MLP neurons that write the answer read as key-value
memories (Geva et al. 2021), and word-vector analogies on the embedding matrix."""

from __future__ import annotations

from collections.abc import Sequence

from interp.data.capitals import Item
from interp.memories import answer_neurons, top_contexts, value_tokens
from interp.organism.corpus import CorpusGenerator
from interp.tokens import encode, first_token_id
from interp.word_vectors import analogy

ANALOGIES = [
    (" man", " king", " woman", " queen"),
    (" France", " Paris", " Germany", " Berlin"),
    (" big", " biggest", " small", " smallest"),
]


def text_sample(model, n: int, seed: int) -> list[str]:
    """n documents of the organism's corpus generator (plain English sentences) that fit the model's context."""
    generator = CorpusGenerator(seed)
    texts = []
    while len(texts) < n:
        text = generator.document()
        if len(encode(text)) < model.cfg.n_ctx:
            texts.append(text)
    return texts


def memories(model, item: Item, layer: int, texts: Sequence[str], n_neurons: int = 3, prepend_bos: bool = True) -> dict:
    """The neurons of block `layer` that write the most for the item's answer, read as key-value memories: the
    tokens their value promotes, the contexts that fire them most."""
    answer = model.tokenizer.decode([first_token_id(" " + item.answer)])
    neurons = answer_neurons(model, item.prompt, layer, answer, k=n_neurons, prepend_bos=prepend_bos)
    contexts = top_contexts(model, layer, [neuron for neuron, _ in neurons], texts, prepend_bos=prepend_bos)
    return {
        "layer": layer,
        "prompt": item.prompt,
        "answer": answer,
        "n_texts": len(texts),
        "neurons": [
            {
                "neuron": neuron,
                "contribution": contribution,
                "value_tokens": [{"token": t, "logit": v} for t, v in value_tokens(model, layer, neuron, k=8)],
                "top_contexts": contexts[neuron],
            }
            for neuron, contribution in neurons
        ],
    }


def analogies(model) -> list[dict]:
    rows = []
    for a, b, c, expected in ANALOGIES:
        nearest = analogy(model, a, b, c, k=5)["nearest"]
        rows.append(
            {
                "query": f"{b.strip()} - {a.strip()} + {c.strip()}",
                "expected": expected,
                "nearest": [{"token": t, "cosine": s} for t, s in nearest],
                "top1_is_expected": nearest[0][0] == expected,
            }
        )
    return rows
