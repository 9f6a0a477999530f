"""The explainer's claims, measured: each measurement checked by hand, against transformers, or on weights built so
that the answer is known (planted word vectors, the planted capital-city mechanism)."""

import json

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from interp.circuits import article
from interp.cli import main
from interp.models import load_model
from interp.tokens import encode
from interp.word_vectors import analogy, nearest

WORDS = (" cat", " kitten", " man", " king", " woman", " queen")


def cosines(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    return vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))


@pytest.mark.parametrize("space", ["embed", "unembed"])
def test_word_vectors_by_hand(tiny_model, space):
    vectors = (tiny_model.W_E if space == "embed" else tiny_model.W_U.T).detach().double().numpy()
    ids = {word: encode(word, tiny_model.tokenizer)[0] for word in WORDS}
    similarity = cosines(vectors, vectors[ids[" cat"]])
    similarity[ids[" cat"]] = -np.inf
    assert [token for token, _ in nearest(tiny_model, " cat", k=3, space=space)["nearest"]] == [
        tiny_model.tokenizer.decode([i]) for i in np.argsort(-similarity)[:3]
    ]

    question = [ids[" man"], ids[" king"], ids[" woman"]]
    similarity = cosines(vectors, vectors[question[1]] - vectors[question[0]] + vectors[question[2]])
    similarity[question] = -np.inf
    found = analogy(tiny_model, " man", " king", " woman", expected=" queen", space=space)
    assert found["expected_rank"] == 1 + int((similarity > similarity[ids[" queen"]]).sum())
    assert found["expected_cosine"] == pytest.approx(similarity[ids[" queen"]], abs=1e-5)
    assert found["nearest"][0][0] == tiny_model.tokenizer.decode([int(np.argmax(similarity))])


def test_a_split_word_is_scored_by_its_first_token(tiny_model):
    found = analogy(tiny_model, " Switzerland", " Swiss", " Cambodia", expected=" Cambodian")
    assert (
        found["split"]
        == [
            word
            for word in (" Switzerland", " Swiss", " Cambodia", " Cambodian")
            if len(encode(word, tiny_model.tokenizer)) > 1
        ]
        and found["split"]
    )


@pytest.fixture(scope="module")
def planted_word_vectors(tmp_path_factory):
    """Tied embeddings in which kitten sits next to cat and king - man + woman is exactly queen."""
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=32))
    ids = {word: encode(word)[0] for word in WORDS}
    with torch.no_grad():
        wte = hf.transformer.wte.weight
        wte.normal_()
        wte[ids[" kitten"]] = wte[ids[" cat"]] + 0.01 * torch.randn(32)
        wte[ids[" queen"]] = wte[ids[" king"]] - wte[ids[" man"]] + wte[ids[" woman"]]
    path = tmp_path_factory.mktemp("planted-word-vectors")
    hf.save_pretrained(path)
    return load_model(str(path), device="cpu")


@pytest.mark.parametrize("space", ["embed", "unembed"])
def test_planted_word_vectors_are_found(planted_word_vectors, space):
    """Weight processing centres both spaces; the planted relations survive it, and both measurements find them."""
    assert nearest(planted_word_vectors, " cat", space=space)["nearest"][0][0] == " kitten"
    found = analogy(planted_word_vectors, " man", " king", " woman", expected=" queen", space=space)
    assert found["expected_rank"] == 1 and found["expected_cosine"] == pytest.approx(1.0, abs=1e-5)


def test_one_liners_against_transformers(tiny_checkpoint, tiny_model):
    hf = GPT2LMHeadModel.from_pretrained(tiny_checkpoint).eval()
    rows = article.one_liners(tiny_model, prepend_bos=False)
    for row, (_, prompt, answer) in zip(rows, article.ONE_LINERS):
        with torch.no_grad():
            logits = hf(torch.tensor([encode(prompt)])).logits[0, -1].double()
        token = encode(answer)[0]
        probs = logits.softmax(-1)
        assert row["prob"] == pytest.approx(float(probs[token]), rel=1e-4, abs=1e-7)
        assert row["rank"] == 1 + int((logits > logits[token]).sum())
        assert row["top_token"] == tiny_model.tokenizer.decode([int(logits.argmax())])


@pytest.mark.slow
def test_fact_emergence_finds_the_planted_capital_block():
    """The planted capital-city mechanism moves the capital to the top after block 19 (README, planted models)."""
    from interp.circuits.capitals import task_items

    planted = load_model("planted:capitals", device="cpu")
    facts = [
        article.fact_emergence(planted, item.prompt, " " + item.answer, prepend_bos=False)
        for item in task_items("capitals", 4)
    ]
    answered = [fact for fact in facts if fact["top_at_output"]]
    assert len(answered) >= 2  # answers outside the planted vocabulary are not recalled
    for fact in answered:
        assert fact["first_top_block"] == 19 and fact["ranks"][20] == 1 and fact["ranks"][19] > 1
    trump, poland = article.facts(planted, prepend_bos=False)  # the command's own facts: the capital's prompt
    assert poland["answer"] == " Warsaw" and poland["first_top_block"] == 19 and trump["first_top_block"] is None


def test_the_command_by_hub_name_and_beside_other_models(from_hub_cache, tmp_path, capsys):
    assert main(["article", "--model", "gpt2", "--models", "organism", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["applies"] and results["model"] == "gpt2"
    assert len(results["word_vectors"]["embed"]["analogies"]) == len(article.ANALOGIES)
    assert [fact["answer"] for fact in results["facts"]] == [answer for _, answer in article.FACTS.values()]
    assert list(results["one_liners"]) == ["gpt2", "organism"]
    assert "expected 'queen' at rank" in capsys.readouterr().out
    figures = sorted(path.name for path in tmp_path.glob("*.png"))
    assert figures == ["article_context.png", "article_facts.png"] + [
        f"article_heads_{kind}.png" for kind in ("duplicate_token", "induction", "previous_token", "pronoun")
    ]
    assert set(results["memories"]["layers"]) == {"0", "1", "10", "11"}
    sample = results["memories"]["texts"]  # the triggers' kinds recomputed from the file alone
    assert [text for _, text in sample] == article.english_sample()[0]
    for layer in results["memories"]["layers"].values():
        for neuron in layer["neurons"]:
            assert article.trigger_kind(neuron["top_contexts"], [topic for topic, _ in sample]) == neuron["trigger"]
    assert results["context_vectors"]["prediction_holds"]["of"] == 12
    assert main(["plot", str(tmp_path / "results.json"), "--out", str(tmp_path / "again")]) == 0
    assert sorted(path.name for path in (tmp_path / "again").glob("*.png")) == figures


def test_the_claims_do_not_apply_to_the_organism(tmp_path, capsys):
    for out in ("a", "b"):
        assert main(["article", "--model", "organism", "--out", str(tmp_path / out)]) == 0
    results = (tmp_path / "a" / "results.json").read_bytes()
    assert results == (tmp_path / "b" / "results.json").read_bytes()  # the same bytes: wall time is in timing.json
    assert not json.loads(results)["applies"] and (tmp_path / "a" / "timing.json").is_file()
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        "organism: the article's claims do not apply: organism is not trained on English text (its vocabulary use is "
        "synthetic): the article's claims are about GPT-2 and do not apply to it"
    )


@pytest.mark.parametrize(
    "spec, problem",
    [
        ("gpt2-xl", "weights for 'gpt2-xl' were not found in the Hugging Face cache"),
        ("planted:nope", "unknown planted model 'planted:nope'"),
    ],
)
def test_a_missing_model_is_said_before_the_measurements(spec, problem, tmp_path, monkeypatch, capsys):
    from conftest import use_hf_cache

    use_hf_cache(monkeypatch, tmp_path / "empty-cache")
    monkeypatch.setattr(article, "word_vectors", lambda model: pytest.fail("measured before the models were checked"))
    assert main(["article", "--model", "organism", "--models", f"organism,{spec}", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"interp: error: {problem}")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def planted_ioi():
    return load_model("planted:ioi", device="cpu")


def test_head_detector_finds_the_planted_previous_token_heads(planted_ioi):
    """TransformerLens's detector on repeated random words, through the bridge: the planted previous-token heads
    (and only they) put nearly all their attention on the previous token."""
    from interp.planted.ioi import ioi_layout

    jobs = article.head_jobs(planted_ioi)
    top = [tuple(h["head"]) for h in jobs["top"]["previous_token"] if h["score"] > 0.5]
    assert sorted(top) == sorted(ioi_layout()["previous_token"])
    for text in jobs["sequences"]:
        ids = encode(text)
        assert ids[: len(ids) // 2] == ids[len(ids) // 2 :]


def test_pronoun_attention_against_transformers(tiny_checkpoint, tiny_model):
    hf = GPT2LMHeadModel.from_pretrained(tiny_checkpoint, attn_implementation="eager").eval()
    tokens = [50256] + encode(article.PRONOUN["prompt"])
    his, john = tokens.index(encode(" his")[0]), tokens.index(encode("John")[0])
    with torch.no_grad():
        attentions = hf(torch.tensor([tokens]), output_attentions=True).attentions
    expected = torch.stack([layer[0, :, his, john] for layer in attentions])
    measured = torch.tensor(article.head_jobs(tiny_model)["scores"]["pronoun"])
    torch.testing.assert_close(measured, expected, atol=1e-5, rtol=1e-5)


def test_ioi_limit_on_the_planted_circuit(planted_ioi):
    """The planted name movers copy the indirect object: from the last token they look at Mary more than at John
    and write Mary more; the model says Mary, not the valet's ' the'."""
    found = article.ioi_limit(planted_ioi, planted_ioi.interp_source.circuit["name_mover"])
    assert found["next_token"][" Mary"]["rank"] == 1 and found["next_token"][" the"]["rank"] > 100
    for mover in found["name_movers"]:
        assert mover["attention"][" Mary"] > mover["attention"][" John"]
        assert mover["direct_logit"][" Mary"] > mover["direct_logit"][" John"] > mover["direct_logit"][" the"]


def test_context_vectors_against_transformers(tiny_checkpoint, tiny_model):
    """The bridge's residual stream is HF's centred over d_model (weight processing): cosines of centred HF hidden
    states are the reference (the last hidden state HF returns is after ln_f, so it is left out)."""
    hf = GPT2LMHeadModel.from_pretrained(tiny_checkpoint).eval()
    found = article.context_vectors(tiny_model, prepend_bos=False)

    def mean_cosine(a, b, same):
        cosines = np.einsum("nld,mld->lnm", a, b)
        keep = ~np.eye(len(a), dtype=bool) if same else np.ones((len(a), len(b)), dtype=bool)
        return cosines[:, keep].mean(-1)

    for word in article.SENSES:
        token, by_sense = encode(word)[0], []
        for sentences in found[word]["sentences"].values():  # the sentences as the results keep them
            rows = []
            for sentence in sentences:
                ids = encode(sentence)
                with torch.no_grad():
                    hidden = hf(torch.tensor([ids]), output_hidden_states=True).hidden_states[:-1]
                rows.append(np.stack([h[0, ids.index(token)].double().numpy() for h in hidden]))
            vectors = np.stack(rows)
            vectors -= vectors.mean(-1, keepdims=True)
            by_sense.append(vectors / np.linalg.norm(vectors, axis=-1, keepdims=True))
        within = np.mean([mean_cosine(v, v, True) for v in by_sense], axis=0)
        across = mean_cosine(*by_sense, False)
        np.testing.assert_allclose(found[word]["within"][:-1], within, atol=1e-5)
        np.testing.assert_allclose(found[word]["across"][:-1], across, atol=1e-5)


@pytest.fixture(scope="module")
def planted_memory(tmp_path_factory):
    """Block 0's neuron 0 has the key ' cat' and the value ' dog'; attention and positions add nothing."""
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32))
    cat, dog = encode(" cat")[0], encode(" dog")[0]
    with torch.no_grad():
        for block in hf.transformer.h:
            for weights in (block.attn.c_attn, block.attn.c_proj):
                weights.weight.zero_()
                weights.bias.zero_()
        hf.transformer.wpe.weight.zero_()
        wte = hf.transformer.wte.weight
        wte[dog] *= 3  # a value that stands out against the vocabulary's chance alignments
        key = wte[cat] - wte[cat].mean()
        mlp = hf.transformer.h[0].mlp
        mlp.c_fc.weight[:, 0] = 20 * key / key.norm()
        mlp.c_fc.bias[0] = -5
        mlp.c_proj.weight[0] = 10 * wte[dog]
    path = tmp_path_factory.mktemp("planted-memory")
    hf.save_pretrained(path)
    return load_model(str(path), device="cpu")


def test_a_planted_memory_neuron_is_read_as_a_shallow_trigger(planted_memory):
    from interp.memories import top_contexts, value_tokens

    texts = [
        "The cat slept.",
        "Prices rose and the cat was fed.",
        "Rain fell on the cat and the roof.",
        "A dog barked at the mailman.",
        "The team won the cup.",
    ]
    topics = ["animals", "money", "weather", "animals", "sports"]
    contexts = top_contexts(planted_memory, 0, [0], texts, k=3, prepend_bos=False)[0]
    assert [c["token"] for c in contexts] == [" cat"] * 3 and sorted(c["text"] for c in contexts) == [0, 1, 2]
    assert article.trigger_kind(contexts, topics) == "shallow"
    assert value_tokens(planted_memory, 0, 0, k=1)[0][0] == " dog"


def test_trigger_kinds_by_hand():
    topics = ["money", "money", "money", "sports", "sports", "weather", "school"]
    contexts = lambda tokens, texts: [{"token": t, "text": i} for t, i in zip(tokens, texts)]  # noqa: E731
    assert (
        article.trigger_kind(contexts([" bank", " bank", " bank", " loan", " goal"], [0, 3, 4, 1, 2]), topics)
        == "shallow"
    )
    assert (
        article.trigger_kind(contexts([" bank", " loan", " rent", " goal", " cup"], [0, 1, 2, 3, 4]), topics)
        == "semantic"
    )
    assert (
        article.trigger_kind(contexts([" bank", " goal", " rain", " exam", " rent"], [0, 3, 5, 6, 1]), topics)
        == "mixed"
    )


def test_the_english_sample_is_six_topics_of_six_texts():
    texts, topics = article.english_sample()
    assert len(texts) == 36 and sorted(set(topics)) == ["animals", "cooking", "money", "school", "sports", "weather"]
    assert all(topics.count(topic) == 6 for topic in set(topics))
