"""The capital-city FFN-vector experiment: ground truth first (a memory planted in one MLP of a small GPT-2 must
be found where it was put), hand computations of the lens and the o-vector intervention, then end-to-end runs
on the organism and on the GPT-2 medium architecture, and bad input."""

import hashlib
import json
import math
import re

import numpy as np
import pytest
import torch
from conftest import make_checkpoint
from transformers import GPT2LMHeadModel

from interp.ablation import ablated, mlps
from interp.circuits import capitals, capitals_cli
from interp.cli import build_parser
from interp.cli import main as interp_main
from interp.data import DATA_DIR, load_pairs
from interp.data.capitals import N_COLORED_OBJECTS, Item, cue_free_prompt
from interp.data.tasks import ASKED_COLORS, COLORS, PAPER_COLORED_OBJECTS_DEMO, ColoredObjects
from interp.errors import InterpError
from interp.memories import answer_neurons, top_contexts, value_tokens
from interp.models import load_model
from interp.results import default_out_dir
from interp.tokens import encode, first_token_id, prompt_tokens, single_token_id
from interp.vectors import (
    final_logits,
    last_position,
    load_vector,
    mean_mlp_outputs,
    mlp_outputs_replaced,
    predictions_without_last_mlps,
    prompt_batches,
)
from interp.word_vectors import analogy

PLANTED_LAYER = 1
PLANTED_PAIRS = [
    ("Poland", "Warsaw"),
    ("France", "Paris"),
    ("Germany", "Berlin"),
    ("China", "Beijing"),
    ("Japan", "Tokyo"),
    ("Italy", "Rome"),
]


def plant_capital_memory(directory, layer=PLANTED_LAYER, n_layer=3, n_embd=128):
    """A GPT-2 whose capital-of function lives in one neuron of block `layer`'s MLP, and nowhere else.

    - Word vectors: every capital's embedding is 0.7 * its country's + r, for one relation vector r that all
      countries are orthogonal to: adding r to a country's residual makes its capital the top token.
    - The task cue: head 0 of block 0 attends uniformly (zero queries and keys) and writes into a cue direction
      the share of the context that is the token " capital". Cue-free prompts leave it at ~0.
    - Block `layer`, neuron 0: its key reads the cue direction (it fires only with the cue), its value is r.
    - Every other attention and MLP output is zero, so the logit lens sees only the embeddings and this.
    The planted directions are orthogonal to every token embedding and centred (LayerNorm leaves them alone).
    LayerNorm gains and biases stay perturbed (from `make_checkpoint`), so weight folding is exercised.
    """
    make_checkpoint(directory, n_layer=n_layer, n_embd=n_embd)
    model = GPT2LMHeadModel.from_pretrained(directory)
    generator = torch.Generator().manual_seed(0)
    directions = [torch.ones(n_embd) / math.sqrt(n_embd)]
    for _ in range(3):  # Gram-Schmidt against the constant direction and each other
        v = torch.randn(n_embd, generator=generator)
        for d in directions:
            v -= (v @ d) * d
        directions.append(v / v.norm())
    cue_in, cue_out, relation = directions[1:]
    planted = torch.stack(directions[1:])
    with torch.no_grad():
        wte, wpe = model.transformer.wte.weight, model.transformer.wpe.weight  # wte is also the unembedding
        wpe.mul_(0.1)  # position is noise here
        for table in (wte, wpe):
            table -= (table @ planted.T) @ planted
        size = wte.norm(dim=1).mean()
        wte[single_token_id(" capital")] = size * cue_in
        for country, capital in PLANTED_PAIRS:
            wte[single_token_id(" " + capital)] = 0.7 * wte[single_token_id(" " + country)] + size * relation
        for block in model.transformer.h:
            for projection in (block.attn.c_proj, block.mlp.c_proj):
                projection.weight.zero_()
                projection.bias.zero_()
        attention = model.transformer.h[0].attn
        attention.c_attn.weight.zero_()
        attention.c_attn.bias.zero_()
        attention.c_attn.weight[:, 2 * n_embd] = cue_in  # head 0's first value dimension reads the cue token
        attention.c_proj.weight[0] = 0.05 * cue_out  # ... and writes the cue direction, ~0.5 token norms
        mlp = model.transformer.h[layer].mlp
        mlp.c_fc.weight[:, 0] = 10 * cue_out  # the key: reads ~5 with the cue, ~0 without
        mlp.c_fc.bias[0] = -25.0
        mlp.c_proj.weight[0] = size / 25 * relation  # the value: r, one token norm at the cue's activation
    model.save_pretrained(directory)
    return directory


def planted_items():
    """The planted model has no induction head to predict the argument after the filler, so its cue-free prompts
    end on the argument: the o-vector turns the argument at the last position into its capital."""
    return [
        Item(x, y, f"The capital of {x}", f"{x} has {y}. The capital of {x}", " ".join(["table", "mug", "free", x] * 3))
        for x, y in PLANTED_PAIRS
    ]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return load_model(str(plant_capital_memory(tmp_path_factory.mktemp("planted"))), device="cpu")


@pytest.fixture(scope="module")
def planted_reading(planted):
    return capitals.read(planted, planted_items())


# --- Ground truth: the planted memory is found where it was put ---------------------------------------------------


def test_lens_finds_the_planted_layer(planted_reading):
    assert planted_reading.answered.all()
    assert capitals.first_lead_blocks(planted_reading.argument_ranks) == [0] * len(PLANTED_PAIRS)
    assert capitals.first_lead_blocks(planted_reading.answer_ranks) == [PLANTED_LAYER] * len(PLANTED_PAIRS)
    assert capitals.emergence_layer(planted_reading.answer_ranks) == PLANTED_LAYER


def test_switch_test_reverts_to_the_argument(planted, planted_reading):
    switch = capitals.switch_test(planted, planted_reading, PLANTED_LAYER)
    assert switch["n"] == len(PLANTED_PAIRS) and switch["rate"] == 1 and switch["answer_lost_rate"] == 1
    # Before the planted block the answer does not lead anywhere: nothing to switch.
    assert capitals.switch_test(planted, planted_reading, 0)["n"] == 0


def test_ablating_the_planted_mlp_loses_recall(planted, planted_reading):
    items = planted_items()
    curves = capitals.ablation_curves(planted, planted_reading, [0, 1, 2])
    # The last k blocks: k = 1 removes only block 2 (empty), k = 2 reaches the planted block 1.
    assert [curves["zero"][k]["abstractive_accuracy"] for k in (0, 1, 2)] == [1, 1, 0]
    # Mean ablation keeps the relation vector: the neuron fires at most positions of these prompts.
    assert curves["mean"][2]["abstractive_accuracy"] == 1
    answers = capitals.first_ids([item.answer for item in items])
    with ablated(planted, mlps([PLANTED_LAYER])):
        assert (final_logits(planted, [item.prompt for item in items]).argmax(-1) != answers).all()


@pytest.mark.parametrize("method", ["zero", "mean"])
def test_batched_last_mlp_ablation_predicts_what_hooks_predict(method):
    """Every k in one engine run starting each variant at its first ablated block, against a forward per k with
    the MLPs ablated by hooks on the bridge."""
    model = load_model("organism", device="cpu")
    prompts = [
        "The capital of Poland is",
        "The capital of France is",
        "Paris is the capital of",
        "The sky is blue and the grass is",
        "Warsaw is in",
    ]
    n_layers, ks = model.cfg.n_layers, [0, 1, 2, 3, 4, 2]
    means = mean_mlp_outputs(model, prompts, range(n_layers), prepend_bos=False)
    for indices, tokens in prompt_batches(model, prompts, prepend_bos=False):
        batched = predictions_without_last_mlps(model, tokens, ks, means if method == "mean" else None).cpu()
        for row, k in enumerate(ks):
            with ablated(model, mlps(range(n_layers - k, n_layers)), method, means):
                reference = final_logits(model, [prompts[i] for i in indices], prepend_bos=False).argmax(-1)
            assert torch.equal(batched[row], reference), (method, k)


def test_planted_o_vector_promotes_each_capital(planted, planted_reading):
    result = capitals.transplant(planted, planted_reading, PLANTED_LAYER, source=0)
    assert result["source"] == "Poland" and result["n"] == len(PLANTED_PAIRS) - 1
    assert result["layers"] == [0, 1, 2] and result["positions"] == "all" and result["o_vector_file"] is None
    # Cue-free, the capital is second to its country (0.7 of it plus r); with the o-vector it leads.
    assert result["mrr_before"] == 0.5 and result["mrr_after"] == 1 and result["no_effect_rate"] == 0


def test_planted_neuron_reads_as_a_key_value_memory(planted):
    neuron, contribution = answer_neurons(planted, "The capital of Poland", PLANTED_LAYER, " Warsaw", k=1)[0]
    assert neuron == 0 and contribution > 0
    # Its value promotes the capitals (they all carry r), its key fires right after the cue.
    promoted = {token.strip() for token, _ in value_tokens(planted, PLANTED_LAYER, 0, k=len(PLANTED_PAIRS))}
    assert promoted == {capital for _, capital in PLANTED_PAIRS}
    texts = ["The dog saw the table", "Berlin is the capital of Germany", "A capital idea", "free table mug"]
    contexts = top_contexts(planted, PLANTED_LAYER, [0], texts, k=2)[0]
    assert contexts[0]["token"] == " capital" and all("capital" in c["context"] + c["token"] for c in contexts)


def test_analogy_on_planted_word_vectors(planted):
    result = analogy(planted, " Poland", " Warsaw", " France", expected=" Paris")
    assert result["nearest"][0][0] == " Paris" and result["expected_rank"] == 1 and not result["split"]


# --- Hand computations on a tiny random GPT-2 ------------------------------------------------------------------


def hf_run(directory, prompt, tokens, replace=None):
    """transformers' own model: log-probs of every lens boundary at the last position, and each MLP's output
    there; `replace` (layer -> vector) overwrites MLP outputs at the last position."""
    hf = GPT2LMHeadModel.from_pretrained(directory).eval()
    outputs = {}

    def hook(layer):
        def fn(module, inputs, output):
            outputs[layer] = output[0, -1].clone()
            if replace and layer in replace:
                output = output.clone()
                output[:, -1] = replace[layer]
            return output

        return fn

    for layer, block in enumerate(hf.transformer.h):
        block.mlp.register_forward_hook(hook(layer))
    with torch.no_grad():
        out = hf(tokens, output_hidden_states=True)
        lens = [hf.lm_head(hf.transformer.ln_f(h[0, -1])) for h in out.hidden_states[:-1]] + [out.logits[0, -1]]
    return torch.stack(lens).log_softmax(-1), outputs


def test_lens_ranks_match_hand_computation(tiny_model, tiny_checkpoint):
    items = capitals.task_items("capitals", 3, seed=1)
    reading = capitals.read(tiny_model, items)
    for i, item in enumerate(items):
        log_probs, _ = hf_run(tiny_checkpoint, item.prompt, tiny_model.to_tokens(item.prompt))
        for ranks, word in ((reading.argument_ranks[i], item.argument), (reading.answer_ranks[i], item.answer)):
            target = log_probs[:, capitals.first_ids([word])[0]][:, None]
            # The number of tokens clearly above the target, up to ties within float error.
            assert ((log_probs > target + 1e-5).sum(-1) + 1 <= ranks).all()
            assert (ranks <= (log_probs > target - 1e-5).sum(-1) + 1).all()


def test_o_vector_and_transplant_match_hand_computation(tiny_model, tiny_checkpoint):
    prompt, cue_free = "The capital of Poland is", cue_free_prompt("China")
    _, hf_outputs = hf_run(tiny_checkpoint, prompt, tiny_model.to_tokens(prompt))
    o_vector = last_position(tiny_model, [prompt], ["blocks.1.hook_mlp_out"])["blocks.1.hook_mlp_out"][0]
    # The bridge centres what writes to the residual stream: the same vector, less its mean.
    assert torch.allclose(o_vector, hf_outputs[1] - hf_outputs[1].mean(), atol=1e-5)
    with mlp_outputs_replaced(tiny_model, o_vector, [0, 1], positions=[-1]):
        ours = final_logits(tiny_model, [cue_free])[0].log_softmax(-1)
    expected, _ = hf_run(tiny_checkpoint, cue_free, tiny_model.to_tokens(cue_free), replace={0: o_vector, 1: o_vector})
    assert torch.allclose(ours, expected[-1], atol=1e-4)
    assert not torch.allclose(ours, final_logits(tiny_model, [cue_free])[0].log_softmax(-1), atol=1e-2)


def test_last_position_keeps_prompt_order(tiny_model):
    prompts = ["a b c d", "The capital", "x", "The capital of Poland"]  # 1st and 4th share a batch
    together = last_position(tiny_model, prompts, ["blocks.0.hook_resid_post"])["blocks.0.hook_resid_post"]
    for prompt, row in zip(prompts, together):
        alone = last_position(tiny_model, [prompt], ["blocks.0.hook_resid_post"])["blocks.0.hook_resid_post"][0]
        assert torch.allclose(row, alone, atol=1e-5)


def test_mean_mlp_outputs_by_hand(tiny_model):
    prompts = ["The capital of Poland", "x y"]
    means = mean_mlp_outputs(tiny_model, prompts, [1])["blocks.1.hook_mlp_out"]
    outputs = [
        tiny_model.run_with_cache(p, names_filter="blocks.1.hook_mlp_out")[1]["blocks.1.hook_mlp_out"][0]
        for p in prompts
    ]
    assert means.shape == (1, tiny_model.cfg.n_ctx, tiny_model.cfg.d_model)
    assert torch.allclose(means[0, 0], outputs[0][0], atol=1e-5)  # BOS: the same in every prompt
    assert torch.allclose(
        means[0, 1:], torch.cat([o[1:] for o in outputs]).mean(0).expand(tiny_model.cfg.n_ctx - 1, -1), atol=1e-5
    )


# --- The authors' protocol -------------------------------------------------------------------------------------

PAPER_COLORED_OBJECTS_EXAMPLE = (
    "Q: On the floor, I see a silver keychain, a red pair of sunglasses, a gold sheet of paper, a black dog leash, and "
    "a blue cat toy. What color is the keychain?\nA: Silver\nQ: On the table, you see a brown sheet of paper, a red "
    "fidget spinner, a blue pair of sunglasses, a teal dog leash, and a gold cup. What color is the sheet of "
    "paper?\nA:"
)
SCENE = re.compile(
    r"Q: On the (\w+), (I|you) see ((?:an? [a-z]+ [a-z ]+, ){4}and an? [a-z]+ [a-z ]+)\. "
    r"What color is the ([a-z ]+)\?"
)


@pytest.fixture(scope="module")
def deep_model(tmp_path_factory):
    return load_model(str(make_checkpoint(tmp_path_factory.mktemp("deep"), n_layer=4)), device="cpu")


def test_cue_free_prompts_end_on_filler_drawn_per_item():
    items = capitals.task_items("capitals", 20, seed=3)
    fillers = []
    for item in items:
        filler = tuple(item.cue_free.split(" ")[:3])
        assert item.cue_free == " ".join([*filler, item.argument] * 2 + list(filler))  # next comes the argument
        assert len(set(filler)) == 3 and set(filler) <= set(capitals.FILLER_WORDS)
        fillers.append(filler)
    assert len(set(fillers)) == len(items)
    assert capitals.task_items("capitals", 20, seed=3) == items
    fixed = capitals.task_items("capitals", 20, seed=3, filler="fixed", cue_free_repeats=2)
    assert [item.prompt for item in fixed] == [item.prompt for item in items]  # the filler does not move the sample
    assert cue_free_prompt("China") == "table mug free China table mug free China table mug free"
    assert fixed[0].cue_free == cue_free_prompt(fixed[0].argument, repeats=2)


def test_filler_words_are_single_tokens_and_never_an_argument():
    assert len(set(capitals.FILLER_WORDS)) == len(capitals.FILLER_WORDS)
    for word in capitals.FILLER_WORDS:
        single_token_id(" " + word)
    arguments = {
        x.lower() for table in ("capitals", "world_capitals", "uppercase", "past_tense") for x, _ in load_pairs(table)
    }
    assert not set(capitals.FILLER_WORDS) & (arguments | set(COLORS))


def test_transplant_writes_every_position_from_the_block_before(deep_model):
    """Plain TransformerLens hooks set the whole MLP output of blocks 1..3 to the block-2 vector: the same
    log-probs as `mlp_outputs_replaced(..., positions="all")`, and the same ranks as the transplant's."""
    items = capitals.task_items("capitals", 4)
    reading = capitals.read(deep_model, items, prepend_bos=False)
    vector = reading.mlp_outputs[0, 2]
    result = capitals.transplant(deep_model, reading, 2)
    assert result["layers"] == [1, 2, 3] and result["positions"] == "all" and result["start"] == "layer-1"

    def constant(activation, hook):
        return vector.to(activation.dtype).expand_as(activation).clone()

    hooks = [(f"blocks.{layer}.hook_mlp_out", constant) for layer in (1, 2, 3)]
    reciprocal_ranks = []
    for item in items[1:]:
        tokens = prompt_tokens(deep_model, item.cue_free, prepend_bos=False)
        with torch.inference_mode(), deep_model.hooks(fwd_hooks=hooks):
            by_hand = deep_model(tokens)[0, -1].float().log_softmax(-1)
        with mlp_outputs_replaced(deep_model, vector, [1, 2, 3], positions="all"):
            ours = final_logits(deep_model, [item.cue_free], prepend_bos=False)[0].log_softmax(-1)
        assert torch.allclose(ours, by_hand, atol=1e-4)
        reciprocal_ranks.append(1 / ((by_hand > by_hand[first_token_id(" " + item.answer)]).sum().item() + 1))
    assert float(result["mrr_after"]) == pytest.approx(sum(reciprocal_ranks) / len(reciprocal_ranks), rel=1e-3)
    assert capitals.transplant_blocks(19, 24) == list(range(18, 24))  # the authors' GPT-2 medium blocks
    assert capitals.transplant_blocks(0, 4) == [0, 1, 2, 3] and capitals.transplant_blocks(2, 4, "layer") == [2, 3]


def test_world_capitals_is_the_authors_table_with_collisions_reported():
    pairs = load_pairs("world_capitals")
    assert len(pairs) == 248 and ("Poland", "Warsaw") in pairs and ("China", "Beijing") in pairs
    with open(DATA_DIR / "world_capitals.tsv", encoding="utf-8") as f:
        assert f.readline() == "country\tcapital\n"
    found = {(c["kind"], c.get("token", c.get("argument"))): c["rows"] for c in capitals.first_token_collisions(pairs)}
    assert sorted(y for _, y in found["answers share their first token", " San"]) == [
        "San José",
        "San Juan",
        "San Marino",
        "San Salvador",
    ]
    assert found["the answer starts with the argument's token", " Mexico"] == [["Mexico", "Mexico City"]]
    assert found["the argument has several answers", "Bolivia"] == [["Bolivia", "Sucre"], ["Bolivia", "La Paz"]]
    assert len(load_pairs("capitals")) == 107 and capitals.first_token_collisions(load_pairs("capitals")) == []
    items = capitals.task_items("capitals")  # every row but France's, the demonstration of every prompt
    assert len(items) == 247 and "France" not in {item.argument for item in items}
    assert all(
        item.prompt == f"Q: What is the capital of France?\nA: Paris\nQ: What is the capital of {item.argument}?\nA:"
        for item in items
    )
    drawn = capitals.task_items("capitals", demonstration="random")
    assert len(drawn) == 248 and len({item.prompt.split("\n")[0] for item in drawn}) > 100


def test_colored_objects_prompts_have_the_documented_format():
    scene = ColoredObjects(
        "table",
        "you",
        (
            ("brown", "sheet of paper"),
            ("red", "fidget spinner"),
            ("blue", "pair of sunglasses"),
            ("teal", "dog leash"),
            ("gold", "cup"),
        ),
        0,
    )
    assert scene.prompt(PAPER_COLORED_OBJECTS_DEMO) == PAPER_COLORED_OBJECTS_EXAMPLE and scene.answer == "Brown"
    assert ASKED_COLORS == tuple(
        color for color in COLORS if len(encode(" " + color)) == len(encode(" " + color.capitalize())) == 1
    )
    demo_lines = PAPER_COLORED_OBJECTS_EXAMPLE.split("\n")[:2]
    items = capitals.task_items("colored_objects", 50, seed=1)
    for item in items:
        lines = item.prompt.split("\n")
        assert lines[:2] == demo_lines and lines[3] == "A:" and len(lines) == 4
        surface, viewer, listed, asked = SCENE.fullmatch(lines[2]).groups()
        things = [thing.split(" ", 2)[1:] for thing in listed.replace(", and ", ", ").split(", ")]
        assert len({color for color, _ in things}) == 5 and {color for color, _ in things} <= set(COLORS)
        assert len({thing for _, thing in things}) == 5 and [item.argument, asked] in things
        assert item.answer == item.argument.capitalize() and item.argument in ASKED_COLORS
        for word in (item.answer, item.argument):
            single_token_id(" " + word)
        assert item.extractive == f"The color of the {asked} is {item.answer}. {item.prompt}"
    assert len({item.answer for item in items}) > 5
    assert len(capitals.task_items("colored_objects")) == N_COLORED_OBJECTS == 200
    drawn = capitals.task_items("colored_objects", 10, demonstration="random")
    assert len({item.prompt.split("\n")[0] for item in drawn}) == 10


def test_o_vector_from_a_npy_file_equals_measuring(tiny_model, tmp_path):
    reading = capitals.read(tiny_model, capitals.task_items("capitals", 4), prepend_bos=False)
    measured = capitals.transplant(tiny_model, reading, 1, source=0)
    path = tmp_path / "city_capital_o1.npy"
    np.save(path, reading.mlp_outputs[0, 1].numpy()[None])  # the authors' arrays may carry a leading axis
    loaded = load_vector(path, tiny_model.cfg.d_model)
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    from_file = capitals.transplant(tiny_model, reading.subset(torch.arange(4) != 0), 1, vector=loaded)
    for key in ("layers", "positions", "n", "mrr_before", "mrr_after", "no_effect_rate"):
        assert from_file[key] == measured[key]
    assert from_file["source"] == str(path) and from_file["o_vector_file"] == {
        "path": str(path),
        "sha256": loaded.sha256,
    }
    # The authors' vectors are transformers' raw MLP outputs, not centred as the bridge's: the same effect.
    np.save(path, reading.mlp_outputs[0, 1].numpy() + 0.5)
    raw = capitals.transplant(tiny_model, reading.subset(torch.arange(4) != 0), 1, vector=load_vector(path, 64))
    assert float(raw["mrr_after"]) == pytest.approx(float(measured["mrr_after"]), rel=1e-6)


def test_o_vector_file_through_the_command(tiny_checkpoint, tmp_path, capsys):
    path = tmp_path / "vector.npy"
    np.save(path, np.linspace(-1, 1, 64, dtype=np.float32))
    assert (
        interp_main(
            [
                "capitals",
                "--model",
                str(tiny_checkpoint),
                "--out",
                str(tmp_path / "out"),
                "--n-prompts",
                "3",
                "--tasks",
                "capitals",
                "--ablation-ks",
                "0",
                "--n-texts",
                "2",
                "--o-vector",
                str(path),
                "--o-vector-layer",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    assert results["protocol"]["o_vector"] == str(path) and results["protocol"]["o_vector_sha256"] == sha256
    transplant = results["transplant"]["capitals"]
    assert transplant["layer"] == 0 and transplant["layers"] == [0, 1] and transplant["n"] == 3
    assert transplant["o_vector_file"] == {"path": str(path), "sha256": sha256}


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("missing.npy", None, "does not exist"),
        ("vector.txt", b"1 2 3", "is not a .npy file"),
        ("short.npy", np.zeros(3, np.float32), r"shape \(3,\); the model's residual stream is 64-dimensional"),
        ("garbage.npy", b"not a NumPy file", "does not hold a numeric NumPy array"),
        ("nan.npy", np.full(64, np.nan, np.float32), "NaN or infinite"),
    ],
)
def test_bad_o_vector_file_is_a_one_line_error(tiny_checkpoint, tmp_path, capsys, name, content, problem):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        np.save(path, content)
    code = interp_main(
        [
            "capitals",
            "--model",
            str(tiny_checkpoint),
            "--o-vector",
            str(path),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ]
    )
    error = capsys.readouterr().err
    assert code == 2 and error.startswith("interp: error: ") and error.count("\n") == 1 and re.search(problem, error)
    assert not (tmp_path / "out").exists()


def test_command_defaults_follow_the_authors():
    args = build_parser().parse_args(["capitals"])
    assert (
        args.tasks,
        args.capitals_table,
        args.demonstration,
        args.filler,
        args.cue_free_repeats,
        args.transplant_positions,
        args.transplant_start,
        args.o_vector,
        args.prepend_bos,
    ) == (list(capitals.TASK_NAMES), "world_capitals", "paper", "random", 2, "all", "layer-1", None, False)
    assert build_parser().parse_args(["lens", "x"]).prepend_bos is True  # other commands keep theirs


def test_results_record_the_protocol(tiny_model, tmp_path):
    sizes = {"quiet": True, "n_prompts": 3, "ablation_ks": [0], "n_texts": 2}
    results = capitals.run(tiny_model, tmp_path / "a", **sizes)
    assert results["prepend_bos"] is False and results["protocol"] == {
        "tasks": list(capitals.TASK_NAMES),
        "capitals_table": "world_capitals",
        "demonstration": "paper",
        "filler": "random",
        "cue_free_repeats": 2,
        "transplant_positions": "all",
        "transplant_start": "layer-1",
        "o_vector": None,
        "o_vector_layer": None,
        "filler_words": list(capitals.FILLER_WORDS),
        "o_vector_sha256": None,
    }
    # The tiny model's 64-token context cannot hold a colored-objects prompt: skipped, and said so.
    assert list(results["skipped_tasks"]) == ["colored_objects"]
    assert set(results["tasks"]) == {"capitals", "past_tense"}
    task = results["tasks"]["capitals"]
    assert task["table"] == "world_capitals" and task["demonstration"] == "France -> Paris"
    assert isinstance(task["first_token_collisions"], list)
    assert results["tasks"]["past_tense"]["demonstration"] == "random"
    for transplant in results["transplant"].values():
        assert transplant["positions"] == "all" and transplant["start"] == "layer-1"
        assert transplant["layers"] == list(range(max(transplant["layer"] - 1, 0), 2))

    results = capitals.run(
        tiny_model,
        tmp_path / "b",
        **sizes,
        tasks=["capitals", "uppercase"],
        prepend_bos=True,
        capitals_table="capitals",
        demonstration="random",
        filler="fixed",
        cue_free_repeats=2,
        transplant_positions=(-1,),
        transplant_start="layer",
    )
    assert results["prepend_bos"] is True and results["skipped_tasks"] == {}
    assert {
        key: results["protocol"][key]
        for key in (
            "tasks",
            "capitals_table",
            "demonstration",
            "filler",
            "cue_free_repeats",
            "transplant_positions",
            "transplant_start",
            "filler_words",
        )
    } == {
        "tasks": ["capitals", "uppercase"],
        "capitals_table": "capitals",
        "demonstration": "random",
        "filler": "fixed",
        "cue_free_repeats": 2,
        "transplant_positions": [-1],
        "transplant_start": "layer",
        "filler_words": ["table", "mug", "free"],
    }
    example = results["tasks"]["capitals"]["examples"][0]
    assert example["cue_free"] == cue_free_prompt(example["argument"], repeats=2)
    assert results["tasks"]["capitals"]["demonstration"] == "random"
    for transplant in results["transplant"].values():
        assert transplant["positions"] == [-1] and transplant["layers"] == list(range(transplant["layer"], 2))


# --- End to end ----------------------------------------------------------------------------------------------

RESULT_KEYS = {
    "model",
    "emergence_layer",
    "switch_test",
    "transplant",
    "ablation",
    "versions",
    "git_commit",
    "tasks",
    "memories",
    "analogies",
    "seed",
    "checkpoint_sha256",
    "protocol",
    "skipped_tasks",
    "prepend_bos",
    "bootstrap",
    "emergence_layer_ci",
}
FIGURES = {f"{name}.{suffix}" for name in ("lens_trajectories", "transplant", "ablation") for suffix in ("png", "svg")}


def check_results(results, out_dir, n_layers):
    assert RESULT_KEYS <= set(results) and "paper_comparison" not in results
    assert json.loads((out_dir / "results.json").read_text()) == results
    assert {p.name for p in out_dir.iterdir()} == {"results.json", "timing.json"} | FIGURES
    assert 0 <= results["emergence_layer"] < n_layers
    assert set(results["transplant"]) | set(results["skipped_tasks"]) == set(capitals.TASK_NAMES)
    for transplant in results["transplant"].values():
        assert set(transplant) >= {"mrr_before", "mrr_after", "no_effect_rate", "layer"}
        assert transplant["layers"] == list(range(max(transplant["layer"] - 1, 0), n_layers))
        assert transplant["positions"] == "all"
        assert 0 < transplant["mrr_before"] <= 1 and 0 <= transplant["no_effect_rate"] <= 1
    for method in ("zero", "mean"):
        for curve in results["ablation"][method].values():
            assert set(curve) >= {"abstractive_accuracy", "extractive_accuracy"}
    for task in results["tasks"].values():
        assert len(task["trajectory"]["answer"]["median"]) == n_layers + 1
        assert len(task["per_prompt"]["answer_ranks"]) == task["n_prompts"]
        assert task["accuracy_ci"][0] <= task["accuracy"] <= task["accuracy_ci"][1]
    described = {
        "n_resamples": 1000,
        "seed": results["seed"],
        "level": 0.95,
        "method": "percentile",
        "strata": len(results["tasks"]),
    }
    assert {key: results["bootstrap"][key] for key in described} == described


def test_organism_end_to_end(tmp_path):
    model = load_model("organism", device="cpu")
    results = capitals.run(model, tmp_path, quiet=True, n_prompts=40, n_texts=50, capitals_table="capitals")
    check_results(results, tmp_path, model.cfg.n_layers)
    assert list(results["skipped_tasks"]) == ["colored_objects"]  # longer than the organism's context
    # The organism memorised most capitals of its own table: the mechanism is measured on those it answers.
    assert results["tasks"]["capitals"]["accuracy"] > 0.5
    assert results["tasks"]["capitals"]["measured_on"] == "answered prompts"
    print(capitals_cli.summary(results))


def test_results_are_deterministic_and_figures_regenerate(tiny_model, tmp_path):
    first = capitals.run(tiny_model, tmp_path / "a", quiet=True, n_prompts=3, n_texts=5, ablation_ks=[0, 2])
    capitals.run(tiny_model, tmp_path / "b", quiet=True, n_prompts=3, n_texts=5, ablation_ks=[0, 2])
    assert (tmp_path / "a" / "results.json").read_bytes() == (tmp_path / "b" / "results.json").read_bytes()
    assert first["transplant"]["capitals"]["mrr_after_ci"] is not None  # the same bytes hold the same intervals
    paths = capitals.figures_from_results(json.loads((tmp_path / "a" / "results.json").read_text()), tmp_path / "c")
    assert {p.name for p in paths} == FIGURES
    assert first["ablation"]["zero"]["2"]["layers"] == [0, 1]


def test_main_writes_results(tiny_checkpoint, tmp_path, capsys):
    code = capitals.main(["--model", str(tiny_checkpoint), "--out", str(tmp_path), "--n-prompts", "3", "--quiet"])
    assert code == 0 and (tmp_path / "results.json").is_file()
    capsys.readouterr()
    assert capitals.main(["--model", str(tmp_path / "missing"), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "is not a directory" in error
    assert default_out_dir("capitals", "random:gpt2-medium").as_posix() == "results/capitals/random-gpt2-medium"
    assert default_out_dir("ioi", str(tiny_checkpoint) + "/").name == tiny_checkpoint.name


def test_paper_comparison_pairs_paper_and_measurement():
    transplant = {
        task: {"layer": 3, "rank_before": 5.0, "rank_after": 2.0, "no_effect_rate": 0.5} for task in capitals.TASK_NAMES
    }
    comparison = capitals.paper_comparison({"emergence_layer": 3, "transplant": transplant})
    assert comparison["emergence_layer"] == {"paper": 19, "ours": 3}
    assert comparison["o_vector_layer"]["past_tense"] == {"paper": 18, "ours": 3}
    assert comparison["no_effect_rate"]["capitals"] == {"paper": 0.37, "ours": 0.5}
    assert comparison["rank_before"]["capitals"] == {"paper": 10, "ours": 5.0}


# --- Bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, problem",
    [
        (lambda m, r: capitals.switch_test(m, r, 2), "layer 2 is out of range: the model has layers 0..1"),
        (lambda m, r: capitals.switch_test(m, r, -1), "layer -1 is out of range"),
        (
            lambda m, r: capitals.transplant(m, r.subset(torch.tensor([True, False, False])), 0),
            "the transplant needs at least two prompts",
        ),
        (lambda m, r: capitals.transplant(m, r, 5), "layer 5 is out of range"),
        (lambda m, r: capitals.ablation_curves(m, r, [3]), r"ablation sizes \[3\] are invalid"),
        (lambda m, r: capitals.ablation_curves(m, r, []), "ablation sizes"),
        (lambda m, r: last_position(m, [], ["blocks.0.hook_resid_post"]), "the prompt list is empty"),
        (lambda m, r: last_position(m, ["ok", " "], ["blocks.0.hook_resid_post"]), "the prompt is empty"),
        (lambda m, r: capitals.read(m, []), "the prompt list is empty"),
        (lambda m, r: mlp_outputs_replaced(m, torch.zeros(3), [0]).__enter__(), "the vector has shape"),
        (lambda m, r: mlp_outputs_replaced(m, torch.zeros(64), [0, 7]).__enter__(), "layer 7 is out of range"),
        (lambda m, r: capitals.task_items("capitals", 1), "a task needs at least 2 prompts"),
        (lambda m, r: capitals.task_items("capital"), "unknown task 'capital'"),
        (lambda m, r: capitals.run(m, "/nonexistent", tasks=["uppercase"]), "the tasks must include 'capitals'"),
        (lambda m, r: capitals.run(m, "/nonexistent", tasks=["capitals", "colour"]), r"unknown tasks \['colour'\]"),
        (lambda m, r: capitals.run(m, "/nonexistent", capitals_table="world"), "unknown table 'world'"),
        (lambda m, r: capitals.run(m, "/nonexistent", o_vector_layer=2), "layer 2 is out of range"),
        (lambda m, r: capitals.run(m, "/nonexistent", transplant_start="next"), "the transplant starts at 'layer-1'"),
        (lambda m, r: capitals.run(m, "/nonexistent", bootstrap=-1), "--bootstrap takes a whole number of resamples"),
        (lambda m, r: capitals.task_items("capitals", 3, demonstration="fixed"), "demonstration must be 'paper'"),
        (lambda m, r: capitals.task_items("capitals", 3, filler="none"), "filler must be 'random' or 'fixed'"),
        (lambda m, r: capitals.task_items("capitals", 3, cue_free_repeats=0), "at least once, not 0"),
        (lambda m, r: value_tokens(m, 0, 9999), r"neurons \[9999\] are out of range"),
        (lambda m, r: top_contexts(m, 3, [0], ["text"]), "layer 3 is out of range"),
        (lambda m, r: answer_neurons(m, "The capital of", 0, "Warsaw"), "token 'Warsaw' is 2 GPT-2 tokens"),
        (lambda m, r: analogy(m, " man", " king", " woman", space="input"), "unknown word-vector space 'input'"),
    ],
)
def test_bad_input(tiny_model, call, problem):
    reading = capitals.read(tiny_model, capitals.task_items("capitals", 3))
    with pytest.raises(InterpError, match=problem):
        call(tiny_model, reading)
