"""The explainer, measured: the checkable claims about GPT-2 of Lee & Trott's "Large language models, explained
with a minimum of math and jargon", each as a measurement beside what the article says.

    python circuits/article.py --model gpt2        (or: interp article --model gpt2 --models gpt2,gpt2-medium)

Method, claim by claim:
 1. Word vectors. Cosine similarity between token vectors, in the input embedding and in the unembedding: the
    nearest tokens to " cat" (the article: dog, kitten, pet), and analogies a : b :: c : ? answered by b - a + c,
    each scored by the rank of the expected word among the whole vocabulary with the three question words left
    out; a word that splits into several tokens is represented by its first token (and listed as split).
 5. Where a fact appears. The logit lens at the prompt's last position, block by block: the first block after
    which the fact's answer is the top token, for "Donald" -> " Trump" (the article places such simple
    associations early) and for the capital of Poland.
 7. Behaviour one-liners. The probability and rank of the expected answer's first token as the next token:
    "the cat sat on a" -> " mat", coffee with cream and sugar, the false-belief story, the reversal pair. With
    several models, the same table side by side (the article: GPT-2 fails the false-belief test).
Claims 2 (context changes a word's vector), 3 (heads' jobs), 4 (key-value memories layer by layer) and 6 (IOI's
limit) are not measured yet.

These are claims about GPT-2 trained on English. On the organism, the planted models and random weights the
measurements still run (same code path) but the results say plainly that the claims do not apply to them.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from interp.circuits.capitals import first_lead_blocks
from interp.cli import add_model, add_prepend_bos, load
from interp.lens import logit_lens
from interp.metrics import token_ranks
from interp.models import load_model
from interp.results import default_out_dir, jsonable, provenance, write_json
from interp.tokens import encode
from interp.vectors import final_logits
from interp.word_vectors import SPACES, analogy, nearest

# What the article says, quoted or closely paraphrased, next to the inputs that test it.
NEAREST = {"word": " cat", "article": "the words nearest to cat include dog, kitten and pet",
           "article_words": [" dog", " kitten", " pet"]}
ANALOGIES = [  # (a, b, c, expected): a is to b as c is to expected
    (" big", " biggest", " small", " smallest"),
    (" France", " Paris", " Germany", " Berlin"),
    (" man", " king", " woman", " queen"),
    (" Switzerland", " Swiss", " Cambodia", " Cambodian"),
    (" ethical", " unethical", " possible", " impossible"),
    (" mouse", " mice", " dollar", " dollars"),
    (" man", " doctor", " woman", " nurse"),  # the article's bias example: doctor - man + woman
]
FACTS = [("Donald", " Trump"), ("The capital of Poland is", " Warsaw")]
ONE_LINERS = [
    ("mat", "the cat sat on a", " mat"),
    ("sugar", "I like my coffee with cream and", " sugar"),
    ("false belief", "Here is a bag filled with popcorn. There is no chocolate in the bag. The label on the bag says "
     "\"chocolate\" and not \"popcorn\". Sam finds the bag. She has never seen it before. Sam reads the label. She "
     "believes that the bag is full of", " chocolate"),
    ("reversal, forward", "Tom Cruise's mother is", " Mary"),
    ("reversal, backward", "Mary Lee Pfeiffer's son is", " Tom"),
]


def applicability(model) -> dict:
    """Whether the article's claims (about GPT-2 trained on English text) can be read off this model."""
    spec = model.interp_source.spec
    if spec.startswith("random:"):
        return {"applies": False, "why": "random weights: every number here is noise, measured only to run the "
                                         "same code as on GPT-2"}
    if spec == "organism" or spec.startswith("planted:"):
        return {"applies": False, "why": f"{spec} is not trained on English text (its vocabulary use is synthetic): "
                                         "the article's claims are about GPT-2 and do not apply to it"}
    return {"applies": True, "why": None}


def word_vectors(model) -> dict:
    """Claim 1 in both spaces."""
    return {space: {"nearest": nearest(model, NEAREST["word"], k=10, space=space),
                    "analogies": [analogy(model, a, b, c, expected, k=5, space=space)
                                  for a, b, c, expected in ANALOGIES]}
            for space in SPACES}


def fact_emergence(model, prompt: str, answer: str, prepend_bos: bool) -> dict:
    """Claim 5 for one fact: the answer's first token's lens rank at every boundary, and the first block after
    which it is the top token (None: never), as the capital-city experiment counts blocks."""
    answer_token = model.tokenizer.decode(encode(answer, model.tokenizer)[:1])
    lens = logit_lens(model, prompt, targets=[answer_token], prepend_bos=prepend_bos)
    ranks = lens.target_ranks[:, -1, 0]  # [boundary]: 0 = the embeddings, b = the output of block b - 1
    return {"prompt": prompt, "answer": answer, "answer_token": answer_token, "ranks": ranks.tolist(),
            "probs": lens.target_probs[:, -1, 0].tolist(), "first_top_block": first_lead_blocks(ranks[None])[0],
            "top_at_output": int(ranks[-1]) == 1}


def one_liners(model, prepend_bos: bool) -> list[dict]:
    """Claim 7: each expected answer's first token, its probability and rank as the next token, and the model's
    own top token."""
    prompts = [prompt for _, prompt, _ in ONE_LINERS]
    logits = final_logits(model, prompts, prepend_bos=prepend_bos)
    answers = torch.tensor([encode(answer, model.tokenizer)[0] for _, _, answer in ONE_LINERS])
    probs = logits.softmax(-1)
    ranks = token_ranks(logits, answers)
    return [{"name": name, "prompt": prompt, "answer": answer, "answer_token": model.tokenizer.decode([int(token)]),
             "prob": float(probs[i, token]), "rank": int(ranks[i]),
             "top_token": model.tokenizer.decode([int(logits[i].argmax())]), "top_prob": float(probs[i].max())}
            for i, ((name, prompt, answer), token) in enumerate(zip(ONE_LINERS, answers))]


def run(model, out_dir: str | Path, prepend_bos: bool = False, others: tuple[str, ...] = ()) -> dict:
    """Every implemented claim on `model` (and the one-liners on each of `others`, loaded one at a time); writes
    results.json."""
    start = time.perf_counter()
    results = {**provenance(model, None), "prepend_bos": prepend_bos, **applicability(model),
               "word_vectors": word_vectors(model),
               "facts": [fact_emergence(model, prompt, answer, prepend_bos) for prompt, answer in FACTS],
               "one_liners": {model.interp_source.spec: one_liners(model, prepend_bos)},
               "article": {"nearest": NEAREST, "analogies": [list(row) for row in ANALOGIES],
                           "facts": "simple associations such as Donald -> Trump appear in early layers",
                           "false_belief": "GPT-2 fails the false-belief test"}}
    for spec in others:
        other = load_model(spec, device=str(model.cfg.device), dtype=model.cfg.dtype)
        results["one_liners"][spec] = one_liners(other, prepend_bos)
        del other
    results["seconds"] = time.perf_counter() - start
    results = jsonable(results)
    write_json(Path(out_dir) / "results.json", results)
    return results


def summary(results: dict) -> str:
    if not results["applies"]:
        return f"{results['model']}: the article's claims do not apply: {results['why']}"
    lines = []
    for space, found in results["word_vectors"].items():
        close = ", ".join(token.strip() for token, _ in found["nearest"]["nearest"][:5])
        lines.append(f"{space}: nearest to 'cat': {close}")
        for row in found["analogies"]:
            lines.append(f"  {row['query']:>28} -> {row['nearest'][0][0].strip():<12} "
                         f"expected {row['expected'].strip()!r} at rank {row['expected_rank']}")
    for fact in results["facts"]:
        lines.append(f"{fact['prompt']!r} -> {fact['answer']!r}: top after block {fact['first_top_block']}")
    for spec, rows in results["one_liners"].items():
        for row in rows:
            lines.append(f"{spec:>12} {row['name']:>18}: {row['answer']!r} p={row['prob']:.3f} rank {row['rank']} "
                         f"(top {row['top_token']!r})")
    return "\n".join(lines)


def add_arguments(parser) -> None:
    add_model(parser, default="gpt2")
    parser.add_argument("--models", default="", metavar="A,B,...",
                        help="more models for the behaviour one-liners, side by side (e.g. gpt2-medium,gpt2-large)")
    parser.add_argument("--out", help="output directory (default results/article/<model>/)")
    add_prepend_bos(parser, default=False)


def run_from_args(args) -> None:
    others = tuple(spec.strip() for spec in args.models.split(",") if spec.strip())
    model = load(args)
    results = run(model, args.out or default_out_dir("article", args.model), args.prepend_bos, others)
    print(summary(results))


if __name__ == "__main__":
    from interp.cli import main

    sys.exit(main(["article", *sys.argv[1:]]))
