"""The IOI dataset: the paper's protocol by default; positions point at the right tokens for every template, the
corruption is ABC as the paper's code draws it."""

from pathlib import Path

import pytest
import torch

from interp.data.ioi import abba, fill, ioi_datasets, templates_for
from interp.data.ioi_words import BABA_TEMPLATES, ORGANISM_NAMES, PAPER_NAMES
from interp.errors import InterpError
from interp.metrics import answer_probs, logit_diffs, normalised
from interp.tokens import GPT2_BOS, gpt2_tokenizer, single_token_id


def test_paper_example_positions():
    """Hand-checked: "When Mary and John went to the store, John gave a drink to" (template 6, ABBA)."""
    tok = gpt2_tokenizer()
    clean, _ = ioi_datasets(
        1,
        names=["Mary", "John", "Anna", "Paul", "Kate"],
        places=["store"],
        objects=["drink"],
        base_templates=[
            BABA_TEMPLATES[6]
            .replace("got a [OBJECT] at", "went to")
            .replace(", [B] decided to give it to", ", [B] gave a [OBJECT] to")
        ],
        order="ABBA",
        seed=0,
    )
    ids = clean.tokens[0].tolist()
    text = [tok.decode([i]) for i in ids]
    io, s = " " + clean.io_names[0], " " + clean.s_names[0]
    assert text[clean.positions["IO"][0]] == io and text[clean.positions["S1"][0]] == s
    assert text[clean.positions["S2"][0]] == s and text[clean.positions["END"][0]] == " to"
    assert clean.positions["S1+1"][0] == clean.positions["S1"][0] + 1
    # ABBA: IO comes first
    assert clean.positions["IO"][0] < clean.positions["S1"][0] < clean.positions["S2"][0]


def test_fill_and_abba():
    template = "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]"
    assert abba(template) == "Then, [A] and [B] went to the [PLACE]. [B] gave a [OBJECT] to [A]"
    assert (
        fill(template, "Mary", "John", "store", "drink")
        == "Then, John and Mary went to the store. John gave a drink to"
    )
    assert (
        fill(template, "Mary", "John", "store", "drink", s2="Paul")
        == "Then, John and Mary went to the store. Paul gave a drink to"
    )


SHARED_NAMES = Path(__file__).resolve().parents[2] / "shared" / "reference" / "ioi_paper_names.txt"


@pytest.mark.skipif(not SHARED_NAMES.exists(), reason="the shared reference lists are beside the checkout")
def test_the_paper_names_are_the_reference_list():
    reference = SHARED_NAMES.read_text().split()
    assert len(reference) == 99 and PAPER_NAMES == reference
    assert len(set(ORGANISM_NAMES) & set(PAPER_NAMES)) == 51  # why the organism's list is not "the paper's"


def test_defaults_are_the_papers():
    """99 names, templates 0-6 of each order drawn at random per prompt, no BOS."""
    clean, _ = ioi_datasets(300, seed=0)
    assert clean.templates == BABA_TEMPLATES[:7] + [abba(t) for t in BABA_TEMPLATES[:7]]
    assert sorted(set(clean.template_ids.tolist())) == list(range(14))
    assert clean.template_ids[:28].tolist() != [i % 14 for i in range(28)]  # drawn, not dealt in turn
    assert not clean.prepend_bos and (clean.tokens[:, 0] != GPT2_BOS).all()
    assert set(clean.io_names) | set(clean.s_names) <= set(PAPER_NAMES)
    assert len(set(clean.io_names) | set(clean.s_names)) > 80
    assert templates_for("BABA") == BABA_TEMPLATES and len(templates_for("mixed", 4)) == 4


def test_abc_is_drawn_as_the_papers_code_draws_it():
    """IO -> X (not IO, not S); both S -> Y; then S1 -> Z; Y and Z drawn from every name, so they can coincide."""
    clean, corrupt = ioi_datasets(2000, seed=1)
    x, z, y = zip(*corrupt.names)
    assert all(xi not in (io, s) for xi, io, s in zip(x, clean.io_names, clean.s_names))
    same = sum(yi == zi for yi, zi in zip(y, z))
    assert 5 <= same <= 60  # about 2000 / 99
    assert any(yi == s for yi, s in zip(y, clean.s_names))  # Y is not kept away from the original names
    rows = torch.arange(len(corrupt))
    ids = lambda names: torch.tensor([single_token_id(" " + n) for n in names])  # noqa: E731
    for key, names in (("IO", x), ("S1", z), ("S2", y)):
        assert torch.equal(corrupt.tokens[rows, corrupt.positions[key]], ids(names))
    _, distinct = ioi_datasets(200, seed=1, corruption="distinct")
    assert all(len(set(names)) == 3 for names in distinct.names)


@pytest.mark.parametrize(
    "kwargs, problem",
    [
        ({"n": 0}, "at least one prompt"),
        ({"n": 3, "names": ["Mary", "John", "Anna"]}, "at least 5 distinct names"),
        (
            {"n": 3, "names": PAPER_NAMES[:10] + ["Bartholomew"]},
            "1 of 11 names are not single GPT-2 tokens: ' Bartholomew' is 3 tokens",
        ),
        ({"n": 3, "places": ["store", "laundromat"]}, "1 of 2 places are not single GPT-2 tokens: ' laundromat' is"),
        ({"n": 3, "order": "AABB"}, "unknown template order 'AABB'"),
        ({"n": 3, "n_templates": 40}, "n_templates must be in 2..15"),
        ({"n": 3, "corruption": "ABB"}, "unknown corruption 'ABB'"),
    ],
)
def test_bad_datasets(kwargs, problem):
    with pytest.raises(InterpError, match=problem):
        ioi_datasets(**kwargs)


def test_metrics_by_hand():
    logits = torch.zeros(2, 3, 5)
    logits[0, 1, 2], logits[0, 1, 4] = 3.0, 1.0  # prompt 0 reads position 1
    logits[1, 2, 2], logits[1, 2, 4] = -1.0, 0.5  # prompt 1 reads position 2
    answer, wrong, positions = torch.tensor([2, 2]), torch.tensor([4, 4]), torch.tensor([1, 2])
    assert logit_diffs(logits, answer, wrong, positions).tolist() == [2.0, -1.5]
    p0 = torch.tensor([0.0, 0.0, 3.0, 0.0, 1.0]).softmax(-1)[2].item()
    assert answer_probs(logits, answer, positions)[0].item() == pytest.approx(p0)
    assert normalised(2.0, clean=3.0, corrupt=-1.0) == pytest.approx(0.75)
