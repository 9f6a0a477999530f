"""Greater-than: the dataset as the authors' code builds it (checked against hand computations with the tokenizer)
and planted:greater-than, whose circuit patching and EAP-IG must find exactly."""

import json
import random
import re

import pytest
import torch

from interp.cache import run_with_selective_cache
from interp.cli import main
from interp.data.greater_than import (
    CENTURIES,
    NOUNS,
    cutoff_sharpness,
    greater_than_task,
    task_years,
    valid_years,
    year_token_ids,
)
from interp.errors import InterpError
from interp.graph import Graph
from interp.models import load_model
from interp.patching import activation_patch
from interp.planted import SPECS, greater_than_circuit, greater_than_edges, parse_planted
from interp.task import Task
from interp.task_metrics import task_metric
from interp.tokens import encode, gpt2_tokenizer, single_token_id

PLANTED_HEADS = [(5, 5), (6, 9), (7, 10), (8, 11), (9, 1)]


@pytest.fixture(scope="module")
def model():
    return load_model("planted:greater-than")


def spread(n: int) -> Task:
    """n pairs whose YY spread over 02..98 (the task cycles YY from 02, so its first n pairs would all be small)."""
    task = greater_than_task(97)
    task.pairs = task.pairs[:: 97 // n][:n]
    return task


# ----------------------------------------------------------------------------------------------------------------
# The dataset


def test_nouns_are_the_authors_120_one_token_words():
    assert len(NOUNS) == len(set(NOUNS)) == 120
    assert NOUNS[:5] == ("abduction", "accord", "affair", "agreement", "appraisal") and NOUNS[-1] == "work"
    assert all(len(encode(" " + noun)) == 1 for noun in NOUNS)


def test_years_split_as_century_then_two_digits_less_each_centurys_first_and_last():
    tokenizer = gpt2_tokenizer()
    expected = []
    for century in CENTURIES:
        # by hand: the ids of " XX" and "YY" on their own, compared with the year's own tokens
        splitting = [
            year
            for year in range(100 * century, 100 * century + 100)
            if encode(f" {year}", tokenizer) == [single_token_id(f" {century}"), single_token_id(f"{year % 100:02d}")]
        ]
        expected += splitting[1:-1]
    assert valid_years() == expected
    # what the tokenizer does: " 1200" is one token, so 1201 is century 12's first and is dropped, as is 1299;
    # " 1280" does not split; century 11's valid years run 1101..1189
    years = set(valid_years())
    assert {1201, 1299, 1280, 1101, 1189}.isdisjoint(years) and {1202, 1298, 1110, 1188} <= years


def test_prompts_cycle_through_yy_with_the_authors_draws_on_a_seeded_generator():
    task = greater_than_task(200, seed=3)
    assert task_years(task) == [2 + i % 97 for i in range(200)]
    # a replay of the authors' calls: nouns with choices, then one randrange per prompt among YY's valid years
    rng, pool = random.Random(3), valid_years()
    nouns = rng.choices(NOUNS, k=200)
    for i, pair in enumerate(task.pairs):
        candidates = [year for year in pool if year % 100 == 2 + i % 97]
        year = candidates[rng.randrange(len(candidates))]
        assert pair.clean == f" The {nouns[i]} lasted from the year {year} to the year {year // 100}"
        assert pair.group == year // 100
    assert greater_than_task(200, seed=3).pairs == task.pairs != greater_than_task(200, seed=4).pairs


def test_the_corruption_puts_01_in_yy_and_the_answers_are_the_years_above_it():
    task = greater_than_task(97)
    assert task.name == "greater-than" and task.metric == "prob-diff" and task.prepend_bos
    tokens = task.tokenize()
    positions = task.word_idxs
    assert positions == {"XX1": 7, "YY": 8, "END": 12}
    # the authors' tokens: "<|endoftext|> " + sentence
    first = task.pairs[0].clean
    assert tokens.clean[0].tolist() == gpt2_tokenizer()("<|endoftext|>" + first)["input_ids"]
    years = year_token_ids()
    assert tokens.clean[:, positions["YY"]].tolist() == [years[yy] for yy in task_years(task)]
    assert (tokens.corrupt[:, positions["YY"]] == years[1]).all()
    differs = tokens.clean != tokens.corrupt
    assert differs[:, positions["YY"]].all() and differs.sum() == len(task)
    assert (tokens.clean[:, positions["XX1"]] == tokens.clean[:, positions["END"]]).all()
    for pair, yy in zip(task.pairs, task_years(task)):
        assert pair.answers == [f"{y:02d}" for y in range(yy + 1, 100)]
        assert pair.wrong_answers == [f"{y:02d}" for y in range(yy + 1)]
    assert len(set(years)) == 100 and all(len(encode(f"{y:02d}")) == 1 for y in range(100))


def test_the_acdc_template_and_refusals():
    acdc = greater_than_task(3, template="acdc", prepend_bos=False)
    assert all(re.fullmatch(r"The [a-z]+ lasted from the year (\d\d)\d\d to \1", pair.clean) for pair in acdc.pairs)
    assert acdc.word_idxs == {"XX1": 6, "YY": 7, "END": 9}
    with pytest.raises(InterpError, match="01-corruption"):
        greater_than_task(3, centuries=(10, 11))  # " 1001" is [" 100", "1"]
    with pytest.raises(InterpError, match="template"):
        greater_than_task(3, template="other")


def test_cutoff_sharpness_is_the_value_after_yy_minus_the_value_before():
    values = torch.arange(200.0).view(2, 100) ** 2
    assert cutoff_sharpness(values, torch.tensor([5, 50])).tolist() == [6**2 - 4**2, 151**2 - 149**2]


# ----------------------------------------------------------------------------------------------------------------
# planted:greater-than


def test_the_planted_spec_says_where_its_circuit_is(model):
    assert "planted:greater-than" in SPECS and parse_planted("planted:greater-than") == ("greater-than", None, 0.0)
    assert greater_than_circuit() == {"heads": PLANTED_HEADS, "mlps": [9, 10]}
    assert model.interp_source.circuit == {"end_heads": PLANTED_HEADS}
    edges = greater_than_edges()
    assert list(model.interp_source.circuit_edges) == edges and len(edges) == len(set(edges)) == 17
    assert set(edges) <= set(Graph.of(model).edge_names())
    cfg = model.cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_mlp, cfg.d_vocab) == (12, 12, 768, 3072, 50257)


def test_pd_is_high_on_clean_prompts_and_near_zero_on_their_corruptions(model):
    task = greater_than_task(97)  # every YY once
    tokens = task.tokenize(model.tokenizer)
    metric = task_metric("prob-diff", tokens)
    with torch.no_grad():
        clean, corrupt = (model(which)[:, -1].float() for which in (tokens.clean, tokens.corrupt))
    clean_pd, corrupt_pd = metric.fn(clean[:, None]), metric.fn(corrupt[:, None])
    assert clean_pd.mean() > 0.85 and (clean_pd > 0).all()
    assert abs(float(corrupt_pd.mean())) < 0.05
    # the cutoff sits at YY: the year after it well above the year before it
    assert (cutoff_sharpness(clean[:, year_token_ids()], torch.tensor(task_years(task))) > 5).all()


def test_the_end_heads_attend_from_end_to_yy_and_elsewhere_to_the_first_position(model):
    task = spread(8)
    tokens = task.tokenize(model.tokenizer)
    names = sorted({f"blocks.{layer}.attn.hook_pattern" for layer, _ in PLANTED_HEADS})
    _, cache = run_with_selective_cache(model, tokens.clean, names)
    end, yy = task.word_idxs["END"], task.word_idxs["YY"]
    for layer, head in PLANTED_HEADS:
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"][:, head].float()
        assert (pattern[:, end, yy] == 1).all()
        assert (pattern[:, :end, 0] == 1).all()


def test_each_planted_component_alone_moves_pd_and_no_other_does(model):
    tokens = spread(4).tokenize(model.tokenizer)
    metric = task_metric("prob-diff", tokens, per_prompt=False)
    heads = activation_patch(model, tokens.clean, tokens.corrupt, metric, "head_out", direction="noise")
    mlps = activation_patch(
        model, tokens.clean, tokens.corrupt, metric, "mlp_out", direction="noise", by_position=False
    )
    clean = float(heads[0, 0])  # head 0.0 writes nothing: patching it changes nothing
    planted = torch.zeros(12, 12, dtype=torch.bool)
    planted[tuple(zip(*PLANTED_HEADS))] = True
    assert ((heads - clean)[planted] < -0.1).all()
    assert (heads - clean)[~planted].abs().max() < 1e-5
    planted_mlps = torch.tensor([layer in (9, 10) for layer in range(12)])
    assert ((mlps - clean)[planted_mlps] < -0.1).all()
    assert (mlps - clean)[~planted_mlps].abs().max() < 1e-5


@pytest.mark.slow
def test_discover_finds_exactly_the_planted_heads_and_mlps(tmp_path):
    """`interp discover --task greater-than`: EAP-IG's circuit holds the planted heads and MLPs and no other node;
    beside the planted edges only edges between planted nodes through LayerNorm scales (|score| < 1e-3 of the
    planted ones'): the heads -> logits, m9 -> m10."""
    argv = ["discover", "--task", "greater-than", "--model", "planted:greater-than", "--n", "20", "--quiet"]
    assert (
        main([*argv, "--bootstrap", "0", "--random-circuits", "0", "--no-template-holdout", "--out", str(tmp_path)])
        == 0
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["task"] == "greater-than" and results["metric_name"] == "prob-diff" and results["n_prompts"] == 20
    assert results["reference"]["nodes"] == {"precision": 1.0, "recall": 1.0, "missed": [], "extra": []}
    assert [tuple(head) for head in results["circuit"]["heads"]] == PLANTED_HEADS
    assert results["reference"]["edge_roc_auc"] == 1.0 and results["circuit"]["faithfulness"] > 0.99
    edges, scores = set(results["circuit"]["edges"]), dict(zip(results["edge_names"], results["scores"]))
    assert set(greater_than_edges()) <= edges
    weakest_planted = min(abs(scores[edge]) for edge in greater_than_edges())
    assert all(abs(scores[edge]) < 1e-3 * weakest_planted for edge in edges - set(greater_than_edges()))


# ----------------------------------------------------------------------------------------------------------------
# The experiment


@pytest.mark.slow
def test_interp_greater_than_recovers_the_planted_circuit_by_path_patching(model, tmp_path, capsys):
    """Path patching in the paper's order finds exactly the planted heads and MLPs; PD per prompt is the model's
    own; the figures come back from results.json alone."""
    out = tmp_path / "run"
    argv = ["greater-than", "--model", "planted:greater-than", "--n", "12", "--bootstrap", "100", "--no-discovery"]
    assert main([*argv, "--quiet", "--out", str(out)]) == 0
    assert "precision 1.0, recall 1.0" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    planted = {f"a{layer}.h{head}" for layer, head in PLANTED_HEADS} | {"m9", "m10"}
    assert set(results["path_patching"]["found"]) == planted and results["reference"]["missed"] == []
    assert [step["receiver"] for step in results["path_patching"]["steps"][:3]] == ["logits", "m10", "m9"]
    assert results["circuits"]["found"]["faithfulness"] > 0.99 and set(results["circuits"]) == {
        "found",
        "authors",
        "acdc",
    }
    tokens = torch.tensor(results["data"]["clean_tokens"])
    with torch.no_grad():
        probs = model(tokens)[:, -1].softmax(-1)[:, year_token_ids()]
    yy = torch.tensor(results["per_prompt"]["yy"])
    above = torch.arange(100)[None] > yy[:, None]
    pd = (probs * above).sum(-1) - (probs * ~above).sum(-1)
    torch.testing.assert_close(torch.tensor(results["per_prompt"]["pd_clean"]), pd, atol=1e-5, rtol=0)
    assert results["pd_clean"]["mean"] == pytest.approx(float(pd.mean()), abs=1e-5)
    assert main(["plot", str(out / "results.json"), "--out", str(tmp_path / "again")]) == 0
    for name in ("greater_than_probabilities.svg", "greater_than_path_patching.svg"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes()


def test_gpt2_from_the_hf_cache_runs_on_the_authors_prompts(from_hub_cache, tmp_path, capsys):
    """GPT-2 small's shape by hub name (random weights: it does not do the task, and says so); the prompts are the
    authors', filtered with the hub's tokenizer files."""
    out = tmp_path / "gpt2"
    argv = ["greater-than", "--model", "gpt2", "--n", "8", "--bootstrap", "0", "--no-discovery", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    expected = greater_than_task(8).tokenize(gpt2_tokenizer())
    assert results["data"]["clean_tokens"] == expected.clean.tolist()
    assert results["data"]["corrupt_tokens"] == expected.corrupt.tolist()
    years = [int(re.search(r"year (\d{4})", pair["clean"]).group(1)) for pair in results["data"]["prompts"]]
    assert set(years) <= set(valid_years()) and [year % 100 for year in years] == results["per_prompt"]["yy"]
    assert results["does_the_task"] is False and "no circuit" in capsys.readouterr().out
