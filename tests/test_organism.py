"""The organism: a seeded corpus with a clean held-out split, deterministic training, and a shipped checkpoint
whose scores match what its training recorded."""

import json
import random
import re

import pytest
import torch

from interp.cli import main
from interp.data.ioi_words import ORGANISM_NAMES
from interp.models import ORGANISM_DIR
from interp.organism.corpus import FILLER_ONLY_NAMES, CorpusGenerator, split, token_stream, training_template
from interp.organism.evaluate import extractive_items
from interp.organism.train import TrainConfig, selection_score, train
from interp.tokens import first_token_id, gpt2_tokenizer

KEYS = [
    "ioi_accuracy",
    "ioi_logit_diff",
    "capital_recall",
    "extractive_recall",
    "uppercase_accuracy",
    "past_tense_accuracy",
]


def test_corpus_is_seeded():
    first = [CorpusGenerator(7).document() for _ in range(50)]
    assert first == [CorpusGenerator(7).document() for _ in range(50)]
    assert first != [CorpusGenerator(8).document() for _ in range(50)]


# The verbs that make the evaluation's and the validation's templates new: no training IOI sentence has them.
HELD_OUT_WORDS = {
    "home",
    "stopped",
    "where",
    "cleaned",
    "sold",
    "sat",
    "read",
    "stayed",
    "lent",
    "danced",
    "sang",
    "relaxed",
    "mailed",
    "lived",
    "carried",
    "cooked",
    "recited",
    "jogged",
    "tossed",
    "rested",
    "returned",
    "hiked",
    "wrote",
}


def test_held_out_material_never_trains():
    sp, generator = split(), CorpusGenerator(0)
    assert not set(sp.heldout_templates) & set(sp.validation_templates)
    rng = random.Random(0)
    assert not {training_template(rng) for _ in range(20_000)} & set(sp.heldout_templates + sp.validation_templates)
    names_in_ioi = set()
    for _ in range(5000):
        sentence = generator.ioi()
        assert not set(re.findall(r"[a-z]+", sentence)) & HELD_OUT_WORDS, sentence
        words = set(re.findall(r"[A-Z][a-z]+", sentence))
        names = words & set(ORGANISM_NAMES)
        assert len(names) == 2 and frozenset(names) not in sp.heldout_pairs
        assert not words & set(FILLER_ONLY_NAMES)
        names_in_ioi |= names
    assert names_in_ioi == set(ORGANISM_NAMES)  # every name the evaluation uses is seen in training IOI sentences
    facts = " ".join(generator.capitals() for _ in range(3000))
    assert not any(
        f"capital of {country}?" in facts or f"capital of {country} is" in facts for country, _ in sp.heldout_countries
    )


def test_every_evaluated_capital_token_is_in_the_corpus():
    seen = set(token_stream(300_000, 0, gpt2_tokenizer()))
    for _, capital in extractive_items(random.Random(0)):
        assert first_token_id(" " + capital) in seen, capital


def test_training_is_deterministic(tmp_path):
    config = TrainConfig(n_layer=1, n_head=2, n_embd=32, steps=12, batch_size=8, warmup=4)
    threads = torch.get_num_threads()
    first = train(tmp_path / "a", config, select_every=1000, quiet=True)
    assert torch.get_num_threads() == threads  # training runs on its own thread count and gives the caller's back
    second = train(tmp_path / "b", config, select_every=1000, quiet=True)
    strip = lambda h: {k: v for k, v in h.items() if k != "minutes"}  # noqa: E731
    assert strip(first["history"][-1]) == strip(second["history"][-1])
    assert first["evaluation"] == second["evaluation"]
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_shipped_checkpoint_scores_what_its_training_recorded(capsys):
    assert main(["organism", "eval", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    recorded = json.loads((ORGANISM_DIR / "training.json").read_text())["evaluation"]
    for key in KEYS:  # the shipped weights are fp16: scores may move a little from the fp32 training run
        assert scores[key] == pytest.approx(recorded[key], abs=0.02 if key != "ioi_logit_diff" else 0.2), key
    assert (ORGANISM_DIR / "model.safetensors").stat().st_size < 20 * 2**20


def test_loaded_like_any_local_checkpoint():
    from interp.models import load_model

    model = load_model("organism", device="cpu")
    assert model.interp_source.checkpoint_dir == str(ORGANISM_DIR)
    assert model.cfg.n_layers == 4 and model.cfg.d_vocab == 50257
    assert model.W_U.dtype == torch.float32


def test_shipped_checkpoint_is_the_one_validation_selects():
    """The rule: the best weaker validation score (IOI on unseen templates, extractive), later steps on ties."""
    training = json.loads((ORGANISM_DIR / "training.json").read_text())
    history = training["history"]
    best = max(range(len(history)), key=lambda i: (selection_score(history[i]), i))
    assert training["selected_step"] == history[best]["step"]
    assert selection_score(
        {"val_ioi_accuracy": 0.9, "val_extractive_recall": 0.7, "val_ioi_logit_diff": 3.0}
    ) < selection_score({"val_ioi_accuracy": 0.8, "val_extractive_recall": 0.8, "val_ioi_logit_diff": 1.0})
