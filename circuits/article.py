"""The explainer, measured: the checkable claims about GPT-2 of Lee & Trott's "Large language models, explained
with a minimum of math and jargon", each as a measurement beside what the article says.

    python circuits/article.py --model gpt2        (or: interp article --model gpt2 --models gpt2,gpt2-medium)

Method, claim by claim:
 1. Word vectors. Cosine similarity between token vectors, in the input embedding and in the unembedding: the
    nearest tokens to " cat" (the article: dog, kitten, pet), and analogies a : b :: c : ? answered by b - a + c,
    each scored by the rank of the expected word among the whole vocabulary with the three question words left
    out; a word that splits into several tokens is represented by its first token (and listed as split).
 2. Context changes the vector. The residual stream at a word, block by block, in sentences that use it in one
    of two senses: the mean cosine between sentences of one sense and between sentences of the two senses. The
    article predicts that the senses of a polysemous word (" magazine": the thing you hold, the company) stay
    closer than those of a homonym (" bank": money, a river's side): a smaller gap between within and across.
 3. Heads have jobs. TransformerLens's head detector scores every head as a previous-token, duplicate-token and
    induction head on sequences of random common words said twice; and the pronoun head: which heads attend from
    " his" to "John" in "John wants his bank to cash the".
 4. Feed-forward layers as key-value memories, layer by layer (Geva et al.). For seeded random neurons of the
    first two and the last two blocks: the contexts of a bundled sample of ordinary English (36 short texts on
    six topics, written for the project, CC0) where each fires most, and the tokens its value vector promotes.
    A neuron's trigger is shallow when most of its top contexts end in the same token, semantic when most come
    from texts of one topic with different last tokens, mixed otherwise; the article (after Geva et al.) expects
    shallow triggers early and semantic ones late.
 5. Where a fact appears. The logit lens at the prompt's last position, block by block: the first block after
    which the fact's answer is the top token, for "Donald" -> " Trump" (the article places such simple
    associations early) and for the capital of Poland on the capital-city experiment's one-shot prompt, whose
    emergence layer in GPT-2 medium is block 19 (Merullo et al.).
 6. IOI's limit. "When Mary and John went to the restaurant, John gave his keys to": the article expects " the"
    (the valet), not a name. The probabilities of " the", " Mary" and " John", and what the name movers (the
    paper's, on GPT-2 small's shape) do there: where they look from the last token, and what they write for each
    of the three.
 7. Behaviour one-liners. The probability and rank of the expected answer's first token as the next token:
    "the cat sat on a" -> " mat", coffee with cream and sugar, the false-belief story, the reversal pair. With
    several models, the same table side by side (the article: GPT-2 fails the false-belief test).

These are claims about GPT-2 trained on English. On the organism, the planted models and random weights the
measurements still run (same code path) but the results say plainly that the claims do not apply to them.
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from interp.cache import run_with_selective_cache
from interp.circuits.capitals import first_lead_blocks
from interp.cli import add_model, add_prepend_bos, load
from interp.data import DATA_DIR
from interp.data.article import (
    ANALOGIES,
    ARTICLE,
    FACTS,
    HEAD_KINDS,
    IOI_LIMIT,
    MEMORY_NEURONS,
    NEAREST,
    ONE_LINERS,
    PRONOUN,
    SENSES,
    TOP_CONTEXTS,
)
from interp.data.ioi import PAPER_HEADS
from interp.lens import boundary_hooks, head_logit_contributions, logit_lens
from interp.memories import top_contexts, value_tokens
from interp.metrics import token_ranks
from interp.models import find_checkpoint, load_model
from interp.results import default_out_dir, jsonable, provenance, write_json
from interp.tokens import encode, prompt_tokens, str_tokens
from interp.vectors import final_logits
from interp.word_vectors import SPACES, analogy, nearest


def applicability(model) -> dict:
    """Whether the article's claims (about GPT-2 trained on English text) can be read off this model."""
    spec = model.interp_source.spec
    if spec.startswith("random:"):
        return {
            "applies": False,
            "why": "random weights: every number here is noise, measured only to run the same code as on GPT-2",
        }
    if spec == "organism" or spec.startswith("planted:"):
        return {
            "applies": False,
            "why": f"{spec} is not trained on English text (its vocabulary use is synthetic): "
            "the article's claims are about GPT-2 and do not apply to it",
        }
    return {"applies": True, "why": None}


def word_vectors(model) -> dict:
    """Claim 1 in both spaces."""
    return {
        space: {
            "nearest": nearest(model, NEAREST["word"], k=10, space=space),
            "analogies": [analogy(model, a, b, c, expected, k=5, space=space) for a, b, c, expected in ANALOGIES],
        }
        for space in SPACES
    }


def context_vectors(model, prepend_bos: bool) -> dict:
    """Claim 2: per word and boundary, the mean cosine between its residual-stream vectors in sentences of the same
    sense ("within", both senses averaged) and of different senses ("across"), and their gap."""
    hooks = boundary_hooks(model.cfg.n_layers)
    results = {}
    for word, senses in SENSES.items():
        token = encode(word, model.tokenizer)[0]
        by_sense = []
        for sentences in senses.values():
            vectors = []
            for sentence in sentences:
                tokens = prompt_tokens(model, sentence, prepend_bos=prepend_bos)
                position = tokens[0].tolist().index(token)
                _, cache = run_with_selective_cache(model, tokens, hooks)
                vectors.append(torch.stack([cache[name][0, position].float() for name in hooks]).cpu())
            by_sense.append(torch.nn.functional.normalize(torch.stack(vectors), dim=-1))  # [sentence, boundary, d]
        within = torch.stack([mean_cosine(vectors, vectors) for vectors in by_sense]).mean(0)
        across = mean_cosine(*by_sense)
        results[word] = {
            "senses": list(senses),
            "sentences": senses,
            "within": within.tolist(),
            "across": across.tolist(),
            "gap": (within - across).tolist(),
        }
    polysemous, homonym = (results[word]["gap"] for word in SENSES)
    blocks = range(1, len(polysemous))  # the embeddings (boundary 0) see no context
    results["prediction_holds"] = {
        "blocks": sum(homonym[b] > polysemous[b] for b in blocks),
        "of": len(blocks),
        "last_block": homonym[-1] > polysemous[-1],
    }
    return results


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[boundary]: the mean cosine over pairs of unit vectors [n, boundary, d] x [m, boundary, d], a vector never
    paired with itself."""
    cosines = torch.einsum("nld,mld->lnm", a, b)
    if a is b:
        pairs = ~torch.eye(len(a), dtype=torch.bool)
        return cosines[:, pairs].mean(-1)
    return cosines.flatten(1).mean(-1)


def english_sample() -> tuple[list[str], list[str]]:
    """(texts, their topics): the bundled sample of ordinary English (interp/data/english_sample.tsv)."""
    rows = [
        line.split("\t")
        for line in (DATA_DIR / "english_sample.tsv").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    return [text for _, text in rows], [topic for topic, _ in rows]


def trigger_kind(contexts: list[dict], topics: list[str]) -> str:
    """shallow: most top contexts end in the same token; semantic: most come from one topic's texts instead."""
    majority = len(contexts) // 2 + 1
    if Counter(c["token"] for c in contexts).most_common(1)[0][1] >= majority:
        return "shallow"
    if Counter(topics[c["text"]] for c in contexts).most_common(1)[0][1] >= majority:
        return "semantic"
    return "mixed"


def memories_by_layer(model, seed: int = 0, prepend_bos: bool = False) -> dict:
    """Claim 4: seeded random neurons of the first two and the last two blocks, their top contexts in the bundled
    English sample, their value tokens, the kind of their trigger, and per block the count of each kind."""
    texts, topics = english_sample()
    layers = sorted({0, 1, model.cfg.n_layers - 2, model.cfg.n_layers - 1})
    generator = torch.Generator().manual_seed(seed)
    results = {"n_texts": len(texts), "topics": sorted(set(topics)), "texts": list(zip(topics, texts)), "layers": {}}
    for layer in layers:
        neurons = torch.randperm(model.cfg.d_mlp, generator=generator)[:MEMORY_NEURONS].tolist()
        contexts = top_contexts(model, layer, neurons, texts, k=TOP_CONTEXTS, prepend_bos=prepend_bos)
        found = [
            {
                "neuron": neuron,
                "trigger": trigger_kind(contexts[neuron], topics),
                "top_contexts": [{**c, "topic": topics[c["text"]]} for c in contexts[neuron]],
                "value_tokens": [{"token": t, "logit": v} for t, v in value_tokens(model, layer, neuron, k=8)],
            }
            for neuron in neurons
        ]
        results["layers"][str(layer)] = {"neurons": found, "kinds": dict(Counter(n["trigger"] for n in found))}
    return results


def repeated_sequences(model, n: int = 10, length: int = 20, seed: int = 0) -> list[str]:
    """Texts of `length` random common words said twice, each checked to tokenize back to exactly those tokens
    (the head detector takes text): in the second half every token has a duplicate and an induction target."""
    rng = random.Random(seed)
    words = [
        i
        for i in range(1000, 20000)
        if (text := model.tokenizer.decode([i])).startswith(" ")
        and text[1:].isalpha()
        and text[1:].islower()
        and len(text) > 3
    ]
    texts = []
    while len(texts) < n:
        ids = rng.sample(words, length)
        text = model.tokenizer.decode(ids + ids)
        if encode(text, model.tokenizer) == ids + ids:
            texts.append(text)
    return texts


def head_jobs(model, seed: int = 0) -> dict:
    """Claim 3: TransformerLens's detector scores ([layer, head]: the share of attention on the pattern's cells)
    on repeated random sequences, and the attention from " his" to "John" of every head."""
    from transformer_lens.head_detector import detect_head

    sequences = repeated_sequences(model, seed=seed)
    scores = {kind: detect_head(model, sequences, name).float() for kind, name in HEAD_KINDS.items()}
    tokens = prompt_tokens(model, PRONOUN["prompt"], prepend_bos=True)  # BOS, not John, takes the idle attention
    position = {word: str_tokens(tokens[0], model.tokenizer).index(word) for word in (PRONOUN["from"], PRONOUN["to"])}
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    _, cache = run_with_selective_cache(model, tokens, names)
    scores["pronoun"] = torch.stack(
        [cache[name][0, :, position[PRONOUN["from"]], position[PRONOUN["to"]]].float() for name in names]
    ).cpu()
    return {
        "sequences": sequences,
        "pronoun": PRONOUN,
        "scores": {k: v.tolist() for k, v in scores.items()},
        "top": {kind: top_heads(grid) for kind, grid in scores.items()},
    }


def top_heads(grid: torch.Tensor, k: int = 5) -> list[dict]:
    values, flat = grid.flatten().topk(k)
    return [{"head": list(divmod(i, grid.shape[1])), "score": v} for v, i in zip(values.tolist(), flat.tolist())]


def ioi_limit(model, name_movers: list[tuple[int, int]] | None = None) -> dict:
    """Claim 6: the next-token probabilities of " the" and the two names, and per name mover its attention from
    the last token to each name and its direct contribution to each of the three logits. The name movers default
    to the IOI paper's on GPT-2 small's shape, and to none on any other."""
    source = "given by the caller"
    if name_movers is None:
        paper_shape = (model.cfg.n_layers, model.cfg.n_heads) == (12, 12)
        name_movers = PAPER_HEADS["name_mover"] if paper_shape else []
        source = "the IOI paper's (GPT-2 small)" if paper_shape else None
    tokens = prompt_tokens(model, IOI_LIMIT["prompt"], prepend_bos=False)  # the IOI protocol: no BOS
    text = str_tokens(tokens[0], model.tokenizer)
    ids = torch.tensor([encode(answer, model.tokenizer)[0] for answer in IOI_LIMIT["answers"]])
    end = tokens.shape[1] - 1
    names = {name: [i for i, token in enumerate(text) if token == name] for name in (" Mary", " John")}
    contributions = head_logit_contributions(model, tokens, torch.tensor([end]), ids[None])[0]  # [layer, head, 3]
    pattern_names = [f"blocks.{layer}.attn.hook_pattern" for layer in sorted({layer for layer, _ in name_movers})]
    logits, patterns = run_with_selective_cache(model, tokens, pattern_names)  # the model's logits come with them
    logits = logits[0, end].float().cpu()
    probs = logits.softmax(-1)
    movers = [
        {
            "head": [layer, head],
            "attention": {
                name: float(patterns[f"blocks.{layer}.attn.hook_pattern"][0, head, end, where].sum())
                for name, where in names.items()
            },
            "direct_logit": {
                answer: float(contributions[layer, head, i]) for i, answer in enumerate(IOI_LIMIT["answers"])
            },
        }
        for layer, head in name_movers
    ]
    return {
        "prompt": IOI_LIMIT["prompt"],
        "article": IOI_LIMIT["article"],
        "next_token": {
            answer: {"prob": float(probs[token]), "rank": int(token_ranks(logits[None], token[None]))}
            for answer, token in zip(IOI_LIMIT["answers"], ids)
        },
        "name_movers": movers,
        "name_mover_source": source,
    }


def fact_emergence(model, prompt: str, answer: str, prepend_bos: bool) -> dict:
    """Claim 5 for one fact: the answer's first token's lens rank at every boundary, and the first block after
    which it is the top token (None: never), as the capital-city experiment counts blocks."""
    answer_token = model.tokenizer.decode(encode(answer, model.tokenizer)[:1])
    lens = logit_lens(model, prompt, targets=[answer_token], prepend_bos=prepend_bos)
    ranks = lens.target_ranks[:, -1, 0]  # [boundary]: 0 = the embeddings, b = the output of block b - 1
    return {
        "prompt": prompt,
        "answer": answer,
        "answer_token": answer_token,
        "ranks": ranks.tolist(),
        "probs": lens.target_probs[:, -1, 0].tolist(),
        "first_top_block": first_lead_blocks(ranks[None])[0],
        "top_at_output": int(ranks[-1]) == 1,
    }


def facts(model, prepend_bos: bool) -> list[dict]:
    """Claim 5 for each of `FACTS`, named."""
    return [
        {"name": name, **fact_emergence(model, prompt, answer, prepend_bos)} for name, (prompt, answer) in FACTS.items()
    ]


def one_liners(model, prepend_bos: bool) -> list[dict]:
    """Claim 7: each expected answer's first token, its probability and rank as the next token, and the model's
    own top token."""
    prompts = [prompt for _, prompt, _ in ONE_LINERS]
    logits = final_logits(model, prompts, prepend_bos=prepend_bos)
    answers = torch.tensor([encode(answer, model.tokenizer)[0] for _, _, answer in ONE_LINERS])
    probs = logits.softmax(-1)
    ranks = token_ranks(logits, answers)
    return [
        {
            "name": name,
            "prompt": prompt,
            "answer": answer,
            "answer_token": model.tokenizer.decode([int(token)]),
            "prob": float(probs[i, token]),
            "rank": int(ranks[i]),
            "top_token": model.tokenizer.decode([int(logits[i].argmax())]),
            "top_prob": float(probs[i].max()),
        }
        for i, ((name, prompt, answer), token) in enumerate(zip(ONE_LINERS, answers))
    ]


def one_liners_beside(model, others: Sequence[str], prepend_bos: bool) -> dict[str, list[dict]]:
    """Claim 7 on `model` and on each of `others` (loaded one at a time, on its device and in its dtype)."""
    table = {model.interp_source.spec: one_liners(model, prepend_bos)}
    for spec in others:
        other = load_model(spec, device=str(model.cfg.device), dtype=model.cfg.dtype)
        table[spec] = one_liners(other, prepend_bos)
        del other
    return table


def run(model, out_dir: str | Path, prepend_bos: bool = False, others: tuple[str, ...] = (), seed: int = 0) -> dict:
    """Every claim measured on `model` (and the one-liners on each of `others`, loaded one at a time); writes
    results.json, the figures drawn from it and timing.json (wall time is kept out of the results, which are the
    same bytes on every run)."""
    start = time.perf_counter()
    measured = {
        "prepend_bos": prepend_bos,
        **applicability(model),
        "word_vectors": word_vectors(model),
        "context_vectors": context_vectors(model, prepend_bos),
        "heads": head_jobs(model, seed),
        "memories": memories_by_layer(model, seed, prepend_bos),
        "facts": facts(model, prepend_bos),
        "ioi_limit": ioi_limit(model),
        "one_liners": one_liners_beside(model, others, prepend_bos),
    }
    results = write_results(model, measured, out_dir, seed)
    write_json(Path(out_dir) / "timing.json", {"total_seconds": time.perf_counter() - start})
    return results


def write_results(model, measured: dict, out_dir: str | Path, seed: int) -> dict:
    """The measurements with their provenance and the article's statements beside them: results.json and the
    figures drawn from it."""
    results = jsonable({**provenance(model, seed), **measured, "article": ARTICLE})
    write_json(Path(out_dir) / "results.json", results)
    figures_from_results(results, out_dir)
    return results


def figures_from_results(results: dict, out_dir: str | Path) -> list[Path]:
    """Every figure of the results: the heads' grids, the facts' lens ranks, the context cosines."""
    from interp.plotting import save_figure

    paths = []
    for kind in results["heads"]["scores"]:
        paths += save_figure(plot_heads(results, kind), out_dir, f"article_heads_{kind}")
    paths += save_figure(plot_facts(results), out_dir, "article_facts")
    return paths + save_figure(plot_context(results), out_dir, "article_context")


def plot_heads(results: dict, kind: str):
    """One head score (or the pronoun attention) as a layers x heads grid."""
    from interp.plotting import plot_layer_grid

    what = "attention from ' his' to 'John'" if kind == "pronoun" else f"{kind.replace('_', ' ')} score"
    return plot_layer_grid(results["heads"]["scores"][kind], f"{what} ({results['model']})", what, center=0.0)


def plot_facts(results: dict):
    """Each fact's answer: its logit-lens rank at the last position, boundary by boundary."""
    import matplotlib.pyplot as plt

    from interp.plotting import STYLE, boundary_axis

    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6, 3.4))
        for fact in results["facts"]:
            ax.plot(fact["ranks"], marker="o", markersize=3, label=fact["name"])
        boundary_axis(ax, len(results["facts"][0]["ranks"]))
        ax.set_yscale("log")
        ax.invert_yaxis()
        ax.set_ylabel("logit-lens rank of the answer")
        ax.set_title(f"Where a fact appears ({results['model']})")
        ax.legend(fontsize=8)
        fig.tight_layout()
    return fig


def plot_context(results: dict):
    """Per word, the mean cosine of its vectors between sentences of one sense (solid) and of the two (dashed)."""
    import matplotlib.pyplot as plt

    from interp.plotting import STYLE, boundary_axis

    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6, 3.4))
        for word, colour in zip(SENSES, ("C0", "C3")):
            data = results["context_vectors"][word]
            ax.plot(data["within"], color=colour, label=f"{word!r}: same sense")
            ax.plot(data["across"], color=colour, linestyle="--", label=f"{word!r}: {' vs '.join(data['senses'])}")
        boundary_axis(ax, len(data["within"]))
        ax.set_ylabel("mean cosine between sentences")
        ax.set_title(f"Context changes the vector ({results['model']})")
        ax.legend(fontsize=7)
        fig.tight_layout()
    return fig


def summary(results: dict) -> str:
    if not results["applies"]:
        return f"{results['model']}: the article's claims do not apply: {results['why']}"
    lines = []
    for space, found in results["word_vectors"].items():
        close = ", ".join(token.strip() for token, _ in found["nearest"]["nearest"][:5])
        lines.append(f"{space}: nearest to 'cat': {close}")
        for row in found["analogies"]:
            lines.append(
                f"  {row['query']:>28} -> {row['nearest'][0][0].strip():<12} "
                f"expected {row['expected'].strip()!r} at rank {row['expected_rank']}"
            )
    for word in SENSES:
        gap = results["context_vectors"][word]["gap"]
        lines.append(f"{word!r}: within - across sense cosine {gap[1]:.3f} after block 0, {gap[-1]:.3f} at the end")
    holds = results["context_vectors"]["prediction_holds"]
    lines.append(
        f"  the homonym's senses further apart than the polysemous word's after {holds['blocks']} of "
        f"{holds['of']} blocks"
    )
    for layer, found in results["memories"]["layers"].items():
        lines.append(f"memories, block {layer}: {found['kinds']}")
    for kind, top in results["heads"]["top"].items():
        lines.append(
            f"{kind:>15} heads: " + " ".join(f"{h['head'][0]}.{h['head'][1]} ({h['score']:.2f})" for h in top[:3])
        )
    for fact in results["facts"]:
        where = "at no block" if fact["first_top_block"] is None else f"after block {fact['first_top_block']}"
        lines.append(f"{fact['name']}: {fact['answer']!r} is the top token {where}")
    limit = results["ioi_limit"]["next_token"]
    lines.append("IOI's limit: " + ", ".join(f"{answer!r} p={row['prob']:.3f}" for answer, row in limit.items()))
    for spec, rows in results["one_liners"].items():
        for row in rows:
            lines.append(
                f"{spec:>12} {row['name']:>18}: {row['answer']!r} p={row['prob']:.3f} rank {row['rank']} "
                f"(top {row['top_token']!r})"
            )
    return "\n".join(lines)


def add_arguments(parser) -> None:
    add_model(parser, default="gpt2")
    parser.add_argument(
        "--models",
        default="",
        metavar="A,B,...",
        help="more models for the behaviour one-liners, side by side (e.g. gpt2-medium,gpt2-large)",
    )
    parser.add_argument("--out", help="output directory (default results/article/<model>/)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random sequences for the head scores")
    add_prepend_bos(parser, default=False)


def run_from_args(args) -> None:
    others = tuple(spec.strip() for spec in args.models.split(",") if spec.strip())
    for spec in others:  # a missing model is said now, not after the measurements
        find_checkpoint(spec)
    model = load(args)
    results = run(model, args.out or default_out_dir("article", args.model), args.prepend_bos, others, args.seed)
    print(summary(results))


if __name__ == "__main__":
    from interp.cli import main

    sys.exit(main(["article", *sys.argv[1:]]))
