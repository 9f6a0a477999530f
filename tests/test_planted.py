"""Planted models: weights constructed so that a known circuit does the task. The pipelines must find exactly what
was planted, measured as on any GPT-2; these tests check the construction itself against independent references
(HF transformers for the forward pass, MIB's published circuit file for edge names, plain attention patterns)."""

import json
from pathlib import Path

import pytest
import torch

from interp.circuits.ioi import Protocol, attention, discover, ld
from interp.circuits.ioi_selection import CLASSES
from interp.cli import main
from interp.data.ioi import PAPER_HEADS
from interp.errors import InterpError
from interp.metrics import answer_probs
from interp.models import load_model
from interp.planted import build_planted, ioi_edges, ioi_layout, parse_planted
from interp.planted.ioi import STAGES
from interp.tokens import first_token_id, prompt_tokens

# MIB's published IOI circuit for GPT-2 small (EAP-IG): every edge of the graph, named as MIB names them.
MIB_CIRCUIT = Path(__file__).resolve().parent / "data" / "mib_ioi_gpt2_eap-ig.json"


def test_paper_layout_is_the_papers_heads_where_causality_allows():
    layout = ioi_layout()
    assert set(layout) == set(CLASSES)
    for name in CLASSES:
        moved = set(PAPER_HEADS[name]) ^ set(layout[name])
        # the paper's backups 9.0 and 9.7 sit beside the name movers 9.9 and 9.6: they move to layer 11
        assert moved == ({(9, 0), (9, 7), (11, 0), (11, 7)} if name == "backup_name_mover" else set()), name


@pytest.mark.parametrize("seed", [None, 1, 2, 3, 4, 5, 6, 7])
def test_layouts_keep_the_order_the_mechanism_needs(seed):
    layout = ioi_layout(seed)
    heads = [head for members in layout.values() for head in members]
    assert len(heads) == len(set(heads)) == 26
    assert {name: len(members) for name, members in layout.items()} == {
        name: len(members) for name, members in PAPER_HEADS.items()
    }
    layers = {name: {layer for layer, _ in members} for name, members in layout.items()}
    assert max(layers["previous_token"]) < min(layers["induction"])
    assert max(layers["duplicate_token"] | layers["induction"]) < min(layers["s_inhibition"])
    assert max(layers["s_inhibition"]) < min(layers["name_mover"] | layers["negative_name_mover"])
    # each backup has a name mover before it whose output it sees
    assert all(layer > min(layers["name_mover"]) for layer in layers["backup_name_mover"])
    if seed is not None:
        assert max(layers["name_mover"]) < min(layers["backup_name_mover"]), STAGES
        assert ioi_layout(seed) == layout and ioi_layout(seed + 100) != layout


def test_edges_are_named_as_mib_names_them():
    mib_edges = set(json.loads(MIB_CIRCUIT.read_text())["edges"])  # every edge of GPT-2 small's graph
    for seed in (None, 3):
        edges = ioi_edges(seed)
        assert len(edges) == len(set(edges)) and set(edges) <= mib_edges
        layout = ioi_layout(seed)
        for layer, head in layout["name_mover"]:
            assert f"a{layer}.h{head}->logits" in edges
        for sender in layout["s_inhibition"]:
            for receiver in layout["name_mover"]:
                assert f"a{sender[0]}.h{sender[1]}->a{receiver[0]}.h{receiver[1]}<q>" in edges
        for sender in layout["previous_token"]:
            for receiver in layout["induction"]:
                assert f"a{sender[0]}.h{sender[1]}->a{receiver[0]}.h{receiver[1]}<k>" in edges


def test_bad_planted_specs_are_one_line_errors(capsys):
    for spec in ("planted:ioi:x", "planted:nothing", "planted:ioi:1:2"):
        with pytest.raises(InterpError, match="planted"):
            build_planted(spec)
    assert main(["lens", "x", "--model", "planted:ioi:seven"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interp: error:") and "planted:ioi:SEED" in err[0]


def test_noise_levels_are_parsed_or_refused():
    assert parse_planted("planted:ioi:noise=0.3") == ("ioi", None, 0.3)
    assert parse_planted("planted:ioi:7:noise=1") == ("ioi", 7, 1.0)
    assert parse_planted("planted:ioi:7") == ("ioi", 7, 0.0)
    for spec, problem in (
        ("planted:ioi:noise=-1", "must be a number >= 0"),
        ("planted:ioi:noise=x", "not 'x'"),
        ("planted:ioi:noise=nan", "must be a number >= 0"),
        ("planted:ioi:7:level=1", "planted:ioi\\[:SEED\\]\\[:noise=LEVEL\\]"),
        ("planted:ioi:noise=1:7", "options planted:ioi does not take"),
    ):
        with pytest.raises(InterpError, match=problem):
            parse_planted(spec)


def head_slices(layer_weights: dict, head: int, d_head: int = 64) -> list[torch.Tensor]:
    """One head's own weights in a GPT-2 block: its Q, K, V columns of c_attn and its rows of c_proj."""
    qkv, out = layer_weights["attn.c_attn.weight"], layer_weights["attn.c_proj.weight"]
    d_model, cols = out.shape[1], slice(head * d_head, (head + 1) * d_head)
    return [qkv[:, part * d_model :][:, cols] for part in range(3)] + [out[cols]]


def test_noise_touches_only_the_heads_outside_the_circuit_and_scales_their_writes():
    """Level 0 is planted:ioi itself; at any level the circuit's heads are untouched; outside it, what a head
    attends to is the same at every level above 0 and what it writes grows linearly with the level."""
    assert parse_planted("planted:ioi:noise=0") == parse_planted("planted:ioi")
    models = {level: build_planted(f"planted:ioi:noise={level:g}")[0].state_dict() for level in (0.5, 1)}
    models[0] = build_planted("planted:ioi")[0].state_dict()
    circuit = {head for heads in ioi_layout().values() for head in heads}
    for layer in range(12):
        weights = {
            level: {
                key.split(f"h.{layer}.", 1)[1]: value
                for key, value in state.items()
                if key.startswith(f"transformer.h.{layer}.")
            }
            for level, state in models.items()
        }
        for head in range(12):
            zero, half, full = (head_slices(weights[level], head) for level in (0, 0.5, 1))
            if (layer, head) in circuit:
                assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(zero, half, full))
                continue
            assert not torch.equal(zero[0], half[0]) and torch.equal(half[0], full[0])  # queries: set, not scaled
            assert not torch.equal(zero[3], half[3])
            torch.testing.assert_close(full[3] - zero[3], 2 * (half[3] - zero[3]), atol=1e-5, rtol=1e-4)
        assert torch.equal(weights[0]["mlp.c_fc.weight"], weights[1]["mlp.c_fc.weight"])


@pytest.fixture(scope="module")
def planted_ioi():
    return load_model("planted:ioi", device="cpu")


def test_built_deterministically_and_loaded_as_any_gpt2(planted_ioi):
    from transformers import GPT2LMHeadModel

    again, _ = build_planted("planted:ioi")
    other, _ = build_planted("planted:ioi:1")
    first, _ = build_planted("planted:ioi")
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    assert not torch.equal(first.transformer.h[9].attn.c_attn.weight, other.transformer.h[9].attn.c_attn.weight)
    assert isinstance(first, GPT2LMHeadModel) and first.config.n_layer == 12 and first.config.n_embd == 768
    assert first.lm_head.weight.data_ptr() == first.transformer.wte.weight.data_ptr()  # tied, as GPT-2's
    tokens = prompt_tokens(
        planted_ioi, "Then, Mary and John went to the store. John gave a drink to", prepend_bos=False
    )
    with torch.no_grad():
        reference = first(tokens).logits.log_softmax(-1)
        ours = planted_ioi(tokens).log_softmax(-1)
    assert torch.allclose(reference, ours, atol=1e-3)
    assert planted_ioi.interp_source.circuit == ioi_layout()


@pytest.fixture(scope="module")
def ioi_prompts(planted_ioi):
    return Protocol().datasets(planted_ioi, 100, 0)


def test_planted_ioi_behaviour(planted_ioi, ioi_prompts):
    clean, corrupt = ioi_prompts
    with torch.inference_mode():
        logits = planted_ioi(clean.tokens)
    diffs = ld(planted_ioi, clean, logits)
    assert (diffs > 0).float().mean() >= 0.99
    assert answer_probs(logits, clean.io_ids, clean.positions["END"]).mean() >= 0.5
    assert abs(ld(planted_ioi, corrupt).mean()) <= 0.05 * diffs.mean()


def test_planted_heads_attend_where_the_mechanism_says(planted_ioi, ioi_prompts):
    clean, _ = ioi_prompts
    layout = ioi_layout()
    at_end = attention(planted_ioi, clean, "END", ["IO", "S1", "S2"])
    from_s2 = attention(planted_ioi, clean, "S2", ["S1", "S1+1"])
    previous = attention(planted_ioi, clean, "S1+1", ["S1"])
    for head in layout["name_mover"] + layout["negative_name_mover"]:
        assert at_end[head][0] > 0.6 and at_end[head].sum() > 0.95  # IO most, the inhibited S less
    for head in layout["backup_name_mover"]:
        assert at_end[head].sum() < 0.05  # quiet while the name movers work
    for head in layout["s_inhibition"]:
        assert at_end[head][2] > 0.95
    for head in layout["duplicate_token"]:
        assert from_s2[head][0] > 0.95
    for head in layout["induction"]:
        assert from_s2[head][1] > 0.95
    for head in layout["previous_token"]:
        assert previous[head][0] > 0.95


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_discovery_finds_a_seeded_layout_blind(tmp_path, seed):
    """The planted model saved as a plain checkpoint directory: discovery cannot know it was planted, and must
    find every class exactly."""
    model, _ = build_planted(f"planted:ioi:{seed}")
    model.save_pretrained(tmp_path)
    blind = load_model(str(tmp_path), device="cpu")
    assert blind.interp_source.circuit is None
    clean, corrupt = Protocol().datasets(blind, 6, seed)
    found = discover(blind, clean, corrupt, quiet=True)["heads"]
    assert {name: sorted(found[name]) for name in CLASSES} == ioi_layout(seed)


@pytest.mark.slow
def test_interp_ioi_recovers_the_planted_circuit(tmp_path, capsys):
    assert (
        main(
            [
                "ioi",
                "--model",
                "planted:ioi",
                "--n",
                "8",
                "--n-templates",
                "4",
                "--out",
                str(tmp_path),
                "--quiet",
                "--random-knockouts",
                "2",
                "--greedy-steps",
                "1",
                "--greedy-candidates",
                "2",
                "--random-circuits",
                "20",
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["model"] == "planted:ioi"
    for name, comparison in results["planted_comparison"].items():
        assert comparison["precision"] == comparison["recall"] == 1, name
    # noise-free ground truth: every planted head is selected in every resample (8 prompts over 4 templates, so
    # resamples vary), and the planted circuit is more faithful than every random circuit of its size
    assert results["bootstrap"]["strata"] < results["n_prompts"]
    for name, heads in results["selection"]["found"].items():
        assert all(frequency == 1.0 for frequency in heads.values()), name
        assert len(results["selection"]["stable"][name]) == len(heads)
    assert results["selection"]["jaccard"]["mean"] == 1.0
    assert results["random_circuits"]["p_value"] == pytest.approx(1 / 21)
    # Template hold-out, 4 prompts a half: every class but the backups is found on each half alone, and each half's
    # circuit is faithful on the other. The layer-11 backups rise by 1.3 on most prompts but fall on one (template
    # 1, a stratum of one prompt, which the bootstrap within template cannot vary): on the half that holds it
    # their mean rise is under the threshold. The hold-out sees what the bootstrap cannot.
    layout = {name: sorted(map(list, heads)) for name, heads in ioi_layout().items() if name != "backup_name_mover"}
    for direction in results["template_holdout"]["directions"]:
        assert {name: sorted(heads) for name, heads in direction["heads"].items() if name in layout} == layout
        assert 0.9 <= direction["held_out_faithfulness"] <= 1.1
    assert results["template_holdout"]["jaccard_between_halves"] >= 0.8
    assert 0.9 <= results["faithfulness"] <= 1.1
    planted = results["planted_circuit"]
    assert planted["heads"] == {name: [list(h) for h in heads] for name, heads in ioi_layout().items()}
    assert 0.9 <= planted["faithfulness"] <= 1.1
    assert "paper_circuit" in results and "paper_comparison" not in results  # the paper's is GPT-2's, not this
    assert (tmp_path / "ioi_completeness.png").exists()


def test_capital_is_country_plus_one_vector():
    """The word2vec arithmetic the paper names, exactly, for the table's pairs whose first tokens are their own."""
    from interp.data import load_pairs
    from interp.planted.capitals import vocabulary

    model, circuit = build_planted("planted:capitals")
    assert circuit is None and (model.config.n_layer, model.config.n_head, model.config.n_embd) == (24, 16, 1024)
    embeddings, words = model.transformer.wte.weight.detach().double(), vocabulary()
    for table, pairs_class in (("world_capitals", "capital"), ("past_tense", "past")):
        differences = []
        for argument, answer in load_pairs(table):
            a, b = first_token_id(" " + argument), first_token_id(" " + answer)
            if a != b and words["classes"].get(b) == pairs_class and words["codes"][a] == words["codes"][b]:
                differences.append(embeddings[b] - embeddings[a])
        differences = torch.stack(differences)
        assert len(differences) >= 0.6 * len(load_pairs(table))
        assert torch.allclose(differences, differences[0].expand_as(differences), atol=1e-5)


@pytest.mark.slow
def test_interp_capitals_recovers_the_planted_mechanism(tmp_path):
    assert (
        main(
            [
                "capitals",
                "--model",
                "planted:capitals",
                "--n-prompts",
                "12",
                "--ablation-ks",
                "0,5",
                "--n-texts",
                "10",
                "--out",
                str(tmp_path),
                "--quiet",
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "results.json").read_text())
    capitals = results["tasks"]["capitals"]
    leads = capitals["argument_first_leads"]
    assert sum(leads.get(str(block), 0) for block in (15, 16, 17, 18)) >= 0.9 * capitals["n_measured"]
    assert results["emergence_layer"] == 19 and capitals["answer_first_leads"] == {"19": capitals["n_measured"]}
    assert results["switch_test"]["rate"] >= 0.9
    assert results["tasks"]["past_tense"]["emergence_layer"] == 18
    for task, transplant in results["transplant"].items():
        assert transplant["mrr_after"] > transplant["mrr_before"] and transplant["no_effect_rate"] <= 0.1, task
    top_five_removed = results["ablation"]["zero"]["5"]
    assert top_five_removed["layers"] == [19, 20, 21, 22, 23]
    assert top_five_removed["abstractive_accuracy"] <= 0.1 and top_five_removed["extractive_accuracy"] >= 0.9


def test_a_head_is_packed_into_its_dimensions_or_refused():
    from interp.planted.weights import Head

    reads = torch.eye(8, dtype=torch.float64)
    head = Head(qk=[(2 * reads[:, :2], reads[:, 2:4])], bias=[reads[:, 5]], ov=[(reads[:, :3], reads[:, 3:6])])
    w = head.weights(8, 4)
    x = torch.randn(8, dtype=torch.float64)
    y = torch.randn(8, dtype=torch.float64)
    score = (x @ w["W_Q"] + w["b_Q"]) @ (y @ w["W_K"]) / 2  # GPT-2 divides by sqrt(d_head)
    assert score.item() == pytest.approx(2 * (x[0] * y[2] + x[1] * y[3]) + y[5])
    assert torch.allclose(y @ w["W_V"] @ w["W_O"], torch.cat([torch.zeros(3), y[:3], torch.zeros(2)]).double())
    with pytest.raises(ValueError, match="QK terms need 5"):
        Head(qk=[(reads[:, :4], reads[:, :4])], bias=[reads[:, 5]]).weights(8, 4)
