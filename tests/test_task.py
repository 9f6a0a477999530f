"""Tasks as data (`interp.task`): every format read against hand-written files, one-line errors for broken ones,
the named metrics against hand computation from full logits, and the task commands against the single-pair ones
and TransformerLens hooks."""

import json
from pathlib import Path

import pytest
import torch

from interp.cli import main
from interp.errors import InterpError
from interp.task import read_task
from interp.task_metrics import task_metric
from interp.task_runs import evaluate_task, load_task, nodes_circuit, patch_task, path_patch_task, prepare
from interp.tokens import encode

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Paul gave a drink to"
CLEAN_2 = "When Anna and Tom went to the park, Tom gave a ball to"
CORRUPT_2 = "When Anna and Tom went to the park, Mark gave a ball to"
MIB_CIRCUIT = Path(__file__).parent / "data" / "mib_ioi_gpt2_eap-ig.json"


@pytest.fixture(scope="module")
def organism():
    from interp.models import load_model

    return load_model("organism", device="cpu")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def interp_file(tmp_path) -> Path:
    return write(
        tmp_path / "task.json",
        json.dumps(
            {
                "name": "two",
                "prompts": [
                    {"clean": CLEAN, "corrupt": CORRUPT, "answers": [" Mary"], "wrong_answers": [" John"], "group": 0},
                    {"clean": CLEAN_2, "corrupt": CORRUPT_2, "answers": " Anna", "wrong_answers": [" Tom"], "group": 1},
                ],
            }
        ),
    )


# ---------------------------------------------------------------------------------------------------------------
# Reading every format


def test_interp_json_and_jsonl_read_the_same_pairs(tmp_path):
    task = read_task(interp_file(tmp_path))
    assert task.name == "two" and len(task) == 2 and task.format == "auto-circuit"
    assert task.pairs[1].answers == [" Anna"]  # a bare answer is a set of one
    lines = "\n".join(json.dumps(pair.to_json()) for pair in task.pairs)
    again = read_task(write(tmp_path / "task.jsonl", lines + "\n\n"))
    assert [p.to_json() for p in again.pairs] == [p.to_json() for p in task.pairs]
    assert again.pairs[1].where == "line 2"
    saved = read_task(task.save(tmp_path / "saved.json"))
    assert saved.format == "interp" and [p.to_json() for p in saved.pairs] == [p.to_json() for p in task.pairs]


def test_auto_circuit_json_with_word_idxs_and_answer_sets(tmp_path):
    data = {
        "seq_labels": ["The", "war", "lasted"],
        "word_idxs": {"YY": 7, "end": 11},
        "prompts": [
            {
                "clean": "The war lasted from the year 1732 to the year 17",
                "corrupt": "The war lasted from the year 1701 to the year 17",
                "answers": [f"{y}" for y in range(33, 100)],
                "wrong_answers": [f"{y:02d}" for y in range(0, 33)],
            },
            {"clean": [464, 1175], "corrupt": [464, 2068], "answers": [318], "wrong_answers": [373]},
        ],
    }
    task = read_task(write(tmp_path / "auto.json", json.dumps(data)))
    tokens = task.tokenize(prepend_bos=True)
    assert tokens.answers.shape == (2, 67) and int((tokens.answers[1] >= 0).sum()) == 1
    assert tokens.answers[0, 0] == encode("33")[0] and tokens.wrong[0, 0] == encode("00")[0]
    assert tokens.clean[1, :3].tolist() == [50256, 464, 1175] and int(tokens.end[1]) == 2  # right-padded
    assert tokens.positions["YY"].tolist() == [7, 7] and task.seq_labels == ["The", "war", "lasted"]


def test_eap_ig_csvs_both_shapes(tmp_path):
    greater = write(
        tmp_path / "greater_than_data.csv",
        "clean,corrupted,label\n"
        "The contract lasted from the year 1352 to the year 13,"
        "The contract lasted from the year 1301 to the year 13,52\n"
        "The effect lasted from the year 1604 to the year 16,The effect lasted from the year 1601 to the year 16,4\n",
    )
    task = read_task(greater)
    assert task.format == "eap-ig-greater-than" and task.metric == "prob-diff" and task.prepend_bos is True
    assert task.pairs[0].answers == [f"{y}" for y in range(53, 100)]
    assert task.pairs[1].wrong_answers == ["00", "01", "02", "03", "04"] and task.pairs[1].where == "line 3"
    ioi = write(
        tmp_path / "ioi.csv",
        f',clean,corrupted,corrupted_hard,correct_idx,incorrect_idx\n470,"{CLEAN}","{CORRUPT}","{CLEAN}",5335,1757\n',
    )
    task = read_task(ioi)
    assert task.format == "eap-ig-ioi" and task.pairs[0].answers == [5335] and task.pairs[0].wrong_answers == [1757]
    assert task.pairs[0].clean == CLEAN


PROMPT = '{"clean": "a", "corrupt": "b", "answers": [" x"]'
BROKEN = [
    ("a.csv", "clean,corrupted\nx,y\n", "a.csv: line 1: the header 'clean,corrupted' is neither"),
    ("b.csv", "clean,corrupted,label\nThe year 1352 to 13,The 1301\n", "b.csv: line 2: missing column 'label'"),
    ("c.csv", "clean,corrupted,label\nx,y,fifty\n", "c.csv: line 2: 'label' is 'fifty', not an integer"),
    ("d.json", '{"prompts": [' + PROMPT + "}]}", "d.json: prompts[0]: missing field 'wrong_answers'"),
    ("e.json", '{"prompts": [' + PROMPT + ', "wrong_answers": []}]}', "e.json: prompts[0]: 'wrong_answers' is empty"),
    ("f.json", '{"prompts": [', "f.json: the file: not valid JSON"),
    ("g.jsonl", PROMPT + ', "wrong_answers": [" y"]}\n{"clean": 3}\n', "g.jsonl: line 2: missing field 'corrupt'"),
    ("h.txt", "x", "h.txt: unknown task format '.txt'"),
    ("i.json", '{"prompts": []}', "i.json: 'prompts' must be a non-empty list"),
]


@pytest.mark.parametrize("name,text,message", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_files_are_one_line_naming_file_row_and_field(tmp_path, name, text, message):
    with pytest.raises(InterpError) as error:
        read_task(write(tmp_path / name, text))
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "pair,message",
    [
        ({"answers": [" Mary Ann"]}, "prompts[0]: answers: ' Mary Ann' is 2 GPT-2 tokens"),
        ({"corrupt": CORRUPT.replace("Paul", "Jonathan Smith")}, "prompts[0]: clean is 14 tokens and corrupt 15"),
        ({"answers": [86753]}, "prompts[0]: answers: 86753 is not a token id"),
    ],
)
def test_tokenizing_refuses_what_the_metric_or_the_method_cannot_take(tmp_path, pair, message):
    base = {"clean": CLEAN, "corrupt": CORRUPT, "answers": [" Mary"], "wrong_answers": [" John"]}
    task = read_task(write(tmp_path / "t.json", json.dumps({"prompts": [{**base, **pair}]})))
    with pytest.raises(InterpError, match=message.replace("[", r"\[").replace("]", r"\]")):
        task.tokenize(prepend_bos=False)


def test_the_command_line_refuses_a_broken_file_in_one_line_and_writes_nothing(tmp_path, capsys):
    bad = write(tmp_path / "bad.json", '{"prompts": [{"clean": "a", "corrupt": "b", "answers": [" x"]}]}')
    for command in (["patch"], ["path-patch", "--receivers", "logits"], ["evaluate", "--circuit", str(bad)]):
        out = tmp_path / command[0]
        assert main([*command, "--task", str(bad), "--model", "organism", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "missing field 'wrong_answers'" in err, err
        assert not out.exists()


def test_ioi_exported_task_gives_back_the_exact_tokens(organism, tmp_path):
    from interp.circuits.ioi import Protocol

    clean, corrupt = Protocol().datasets(organism, 12, 3)
    path = tmp_path / "ioi.json"
    assert main(["task", "export", "ioi", "--n", "12", "--seed", "3", "--model", "organism", "--out", str(path)]) == 0
    tokens = read_task(path).tokenize(organism.tokenizer)
    assert torch.equal(tokens.clean, clean.tokens) and torch.equal(tokens.corrupt, corrupt.tokens)
    assert torch.equal(tokens.end, clean.positions["END"]) and torch.equal(tokens.answers[:, 0], clean.io_ids)
    assert torch.equal(tokens.groups, clean.template_ids.unique(return_inverse=True)[1])


# ---------------------------------------------------------------------------------------------------------------
# Metrics, by hand from the full logits


def test_each_metric_equals_a_hand_computation(organism, tmp_path):
    data = {
        "prompts": [
            {"clean": CLEAN, "corrupt": CORRUPT, "answers": [" Mary", " Anna"], "wrong_answers": [" John"]},
            {
                "clean": CLEAN_2 + " the",
                "corrupt": CORRUPT_2 + " the",
                "answers": [" Anna"],
                "wrong_answers": [" Tom", " Mark", " the"],
            },
        ]
    }
    tokens = read_task(write(tmp_path / "t.json", json.dumps(data))).tokenize(organism.tokenizer)
    with torch.no_grad():
        logits = organism(tokens.clean)
        corrupt_logits = organism(tokens.corrupt)
    final = logits[torch.arange(2), tokens.end]
    ids = [([encode(a)[0] for a in p["answers"]], [encode(w)[0] for w in p["wrong_answers"]]) for p in data["prompts"]]
    log_probs = final.log_softmax(-1)
    expected = {
        "logit-diff": [final[i, a].mean() - final[i, w].mean() for i, (a, w) in enumerate(ids)],
        "prob-diff": [log_probs[i, a].exp().sum() - log_probs[i, w].exp().sum() for i, (a, w) in enumerate(ids)],
        "logprob": [log_probs[i, a].exp().sum().log() for i, (a, _) in enumerate(ids)],
    }
    for name, values in expected.items():
        metric = task_metric(name, tokens, organism)
        read = logits[torch.arange(2)[:, None], tokens.end[:, None]]
        read = read if metric.token_ids is None else read[..., metric.token_ids]
        torch.testing.assert_close(metric.fn(read), torch.stack(values), atol=1e-5, rtol=1e-5)
    kl = task_metric("kl", tokens, organism)
    corrupt_final = corrupt_logits[torch.arange(2), tokens.end]
    by_hand = torch.nn.functional.kl_div(corrupt_final.log_softmax(-1), log_probs, log_target=True, reduction="none")
    torch.testing.assert_close(kl.fn(corrupt_final[:, None]), by_hand.sum(-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(kl.fn(final[:, None]), torch.zeros(2), atol=1e-5, rtol=0)
    with pytest.raises(InterpError, match="unknown metric 'pd'"):
        task_metric("pd", tokens, organism)


# ---------------------------------------------------------------------------------------------------------------
# The task commands


def test_patching_a_task_is_the_mean_of_patching_each_pair(organism, tmp_path):
    from interp.patching import patch_grid_for_cli

    prepared = prepare(organism, read_task(interp_file(tmp_path)))
    for site in ("resid_pre", "head_out"):
        data = patch_task(organism, prepared, site)
        singles = [
            torch.tensor(patch_grid_for_cli(organism, clean, corrupt, answer, wrong, site)["grid"])
            for clean, corrupt, answer, wrong in (
                (CLEAN, CORRUPT, " Mary", " John"),
                (CLEAN_2, CORRUPT_2, " Anna", " Tom"),
            )
        ]
        torch.testing.assert_close(torch.tensor(data["grid"]), torch.stack(singles).mean(0), atol=1e-4, rtol=1e-4)
    assert len(data["per_prompt"]["grid"][0][0]) == 2


def test_the_patch_command_takes_a_task(tmp_path, capsys):
    path = interp_file(tmp_path)
    argv = ["patch", "--task", str(path), "--model", "organism", "--site", "head_out", "--bootstrap", "50"]
    assert main([*argv, "--out", str(tmp_path / "out"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["n_prompts"] == 2 and len(data["grid_ci"]) == 4 and data["data"]["clean_tokens"][0][0] == 50256
    assert json.loads((tmp_path / "out" / "patch.json").read_text())["grid"] == data["grid"]
    longer = read_task(path)
    longer.pairs[1] = longer.pairs[1].__class__(CLEAN_2 + " now", CORRUPT_2 + " now", [" Anna"], [" Tom"])
    assert main(["patch", "--task", str(longer.save(tmp_path / "longer.json")), "--model", "organism"]) == 2
    assert "needs prompts of one token length" in capsys.readouterr().err


def test_path_patching_into_the_logits_is_each_senders_direct_effect(organism, tmp_path):
    """Against TransformerLens hooks: the clean run with the sender's output change (corrupt - clean) added to the
    final residual."""
    prepared = prepare(organism, read_task(interp_file(tmp_path)))
    tokens, last = prepared.tokens, organism.cfg.n_layers - 1
    senders = ["a1.h3", f"a{last}.h2", "m1"]
    data = path_patch_task(organism, prepared, ["logits"], senders)
    with torch.no_grad():
        _, clean_cache = organism.run_with_cache(tokens.clean)
        _, corrupt_cache = organism.run_with_cache(tokens.corrupt)
    rows = torch.arange(len(tokens))
    reference = []
    for layer, head in ((1, 3), (last, 2), (1, None)):
        if head is None:
            name = f"blocks.{layer}.hook_mlp_out"
            delta = corrupt_cache[name] - clean_cache[name]
        else:
            z = f"blocks.{layer}.attn.hook_z"
            delta = (corrupt_cache[z] - clean_cache[z])[:, :, head] @ organism.W_O[layer, head]

        def add(resid, hook, delta=delta):
            return resid + delta

        with torch.no_grad():
            logits = organism.run_with_hooks(tokens.clean, fwd_hooks=[(f"blocks.{last}.hook_resid_post", add)])
        reference.append(prepared.metric.fn(logits[rows, tokens.end][:, None][..., prepared.metric.token_ids]))
    measured = torch.tensor(data["per_prompt"]["effect"]) + torch.tensor(data["per_prompt"]["clean_metric"])
    torch.testing.assert_close(measured, torch.stack(reference), atol=1e-4, rtol=1e-4)
    assert [row["sender"] for row in data["senders"]] == senders
    with pytest.raises(InterpError, match="unknown receiver 'm9'"):
        path_patch_task(organism, prepared, ["m9"])
    with pytest.raises(InterpError, match="m3 writes to none of the receivers"):
        path_patch_task(organism, prepared, ["m1"], ["m3"])


def test_evaluate_gives_discovers_faithfulness_from_its_files(organism, tmp_path, capsys):
    """`interp discover` writes circuit.json and task.json; `interp evaluate` on them gives its faithfulness."""
    out = tmp_path / "discover"
    argv = ["--model", "organism", "--n", "8", "--names", "organism", "--quiet", "--bootstrap", "0"]
    assert (
        main(
            ["discover", *argv, "--method", "eap", "--random-circuits", "0", "--no-template-holdout", "--out", str(out)]
        )
        == 0
    )
    found = json.loads((out / "results.json").read_text())["circuit"]
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--task",
                str(out / "task.json"),
                "--circuit",
                str(out / "circuit.json"),
                "--model",
                "organism",
                "--bootstrap",
                "0",
                "--json",
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["faithfulness"] == pytest.approx(found["faithfulness"], abs=1e-5)
    assert data["n_edges"] == found["n_edges"]


def test_evaluate_mibs_published_circuit_and_a_node_list(tmp_path):
    """MIB's IOI circuit (GPT-2 small's graph) evaluated on GPT-2 small's shape, as `interp.discovery` evaluates
    it; a node list is every edge among its nodes."""
    from interp.discovery import faithfulness
    from interp.models import load_model
    from interp.task_runs import read_circuit

    model = load_model("random:gpt2", device="cpu")
    prepared = prepare(model, load_task("ioi", model, 3))
    circuit, kind = read_circuit(MIB_CIRCUIT, model)
    assert kind.startswith("edges") and int(circuit.in_graph.sum()) == 756
    data = evaluate_task(model, prepared, circuit)
    tokens = prepared.tokens
    assert data["faithfulness"] == pytest.approx(
        faithfulness(model, circuit.pruned(), tokens.clean, tokens.corrupt, prepared.metric), abs=1e-4
    )
    graph = circuit.graph
    nodes = nodes_circuit(graph, ["a9.h9", "m10"], "list")
    assert sorted(nodes.edges()) == sorted(
        [
            "input->a9.h9<q>",
            "input->a9.h9<k>",
            "input->a9.h9<v>",
            "input->m10",
            "input->logits",
            "a9.h9->m10",
            "a9.h9->logits",
            "m10->logits",
        ]
    )
    with pytest.raises(InterpError, match="unknown node 'a12.h0'"):
        nodes_circuit(graph, ["a12.h0"], "list")


def test_a_device_that_is_not_there_is_one_line_before_loading(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for argv in (
        ["lens", "hello", "--model", "organism", "--device", "cuda"],
        ["ioi", "--model", "organism", "--device", "tpu"],
        ["discover", "--device", "cuda:1"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "available here: cpu" in err, err


def test_capitals_and_greater_than_export_as_tasks(organism, tmp_path):
    """Every prompt set interp builds is a task: capitals pairs each question with another country's of the same
    length (first capital tokens as answers); greater-than comes back as its own pairs."""
    from interp.data.capitals import task_items
    from interp.data.greater_than import greater_than_task

    task = load_task("capitals", organism, 20)
    tokens = task.tokenize(organism.tokenizer)
    questions = {item.prompt: item.answer for item in task_items("capitals")}
    assert len(task) == 20 and task.prepend_bos is False
    for pair, answer, wrong in zip(task.pairs, tokens.answers[:, 0], tokens.wrong[:, 0]):
        assert pair.clean != pair.corrupt and int(answer) != int(wrong)
        assert (
            int(answer) == encode(" " + questions[pair.clean])[0]
            and int(wrong) == encode(" " + questions[pair.corrupt])[0]
        )
    path = tmp_path / "gt.json"
    assert main(["task", "export", "greater-than", "--n", "5", "--model", "organism", "--out", str(path)]) == 0
    assert [p.to_json() for p in read_task(path).pairs] == [p.to_json() for p in greater_than_task(5).pairs]
