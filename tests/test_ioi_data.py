"""The IOI dataset: positions point at the right tokens for every template, the corruption is ABC."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from interp.data.ioi import abba, fill, ioi_datasets, templates_for
from interp.data.ioi_words import BABA_TEMPLATES, NAMES
from interp.errors import InterpError
from interp.metrics import answer_probs, logit_diffs, normalised
from interp.tokens import gpt2_tokenizer


def test_paper_example_positions():
    """Hand-checked: "When Mary and John went to the store, John gave a drink to" (template 6, ABBA)."""
    tok = gpt2_tokenizer()
    clean, _ = ioi_datasets(1, names=["Mary", "John", "Anna", "Paul", "Kate"], places=["store"], objects=["drink"],
                            base_templates=[BABA_TEMPLATES[6].replace("got a [OBJECT] at", "went to")
                                            .replace(", [B] decided to give it to", ", [B] gave a [OBJECT] to")],
                            order="ABBA", seed=0)
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
    assert fill(template, "Mary", "John", "store", "drink") == \
        "Then, John and Mary went to the store. John gave a drink to"
    assert fill(template, "Mary", "John", "store", "drink", s2="Paul") == \
        "Then, John and Mary went to the store. Paul gave a drink to"


def test_mixed_covers_both_orders_and_all_templates():
    clean, _ = ioi_datasets(60, seed=0)
    assert sorted(set(clean.template_ids.tolist())) == list(range(30))
    assert len(templates_for("mixed")) == 30


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40), order=st.sampled_from(["mixed", "BABA", "ABBA"]))
def test_positions_and_corruption_properties(seed, n, order):
    clean, corrupt = ioi_datasets(n, seed=seed, order=order)
    tok = gpt2_tokenizer()
    rows = torch.arange(n)
    assert torch.equal(clean.tokens[rows, clean.positions["IO"]], clean.io_ids)
    assert torch.equal(clean.tokens[rows, clean.positions["S1"]], clean.s_ids)
    assert torch.equal(clean.tokens[rows, clean.positions["S2"]], clean.s_ids)
    assert (clean.tokens[rows, clean.positions["END"]] == tok.encode(" to")[0]).all()
    for i in range(n):
        # the prompt text tokenizes to exactly the stored tokens (BOS first, then padding only)
        end = int(clean.positions["END"][i])
        assert clean.tokens[i, 1:end + 1].tolist() == tok(clean.prompts[i])["input_ids"]
        corrupt_names = {corrupt.io_names[i], corrupt.s_names[i],
                         tok.decode([int(corrupt.tokens[i, corrupt.positions["S2"][i]])]).strip()}
        assert len(corrupt_names) == 3 and not corrupt_names & {clean.io_names[i], clean.s_names[i]}
    for key in clean.positions:  # same template, same positions
        assert torch.equal(clean.positions[key], corrupt.positions[key])


@pytest.mark.parametrize("kwargs, problem", [
    ({"n": 0}, "at least one prompt"),
    ({"n": 3, "names": ["Mary", "John", "Anna"]}, "at least 5 distinct names"),
    ({"n": 3, "names": NAMES[:10] + ["Bartholomew"]}, "1 of 11 names are not single GPT-2 tokens: ' Bartholomew' is 3 tokens"),
    ({"n": 3, "places": ["store", "laundromat"]}, "1 of 2 places are not single GPT-2 tokens: ' laundromat' is"),
    ({"n": 3, "order": "AABB"}, "unknown template order 'AABB'"),
])
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
