"""Edge-level discovery against independent references: TransformerLens 4.3's edge attribution and faithfulness,
hook-based exact edge patching on the bridge, MIB's published circuit file, hand-built graphs and hand
computation; on planted:ioi, the planted circuit's edges."""

import json
import random
from pathlib import Path

import pytest
import torch

from interp.discovery import (
    MIB_BUDGETS,
    Circuit,
    Graph,
    area,
    circuit_metrics,
    edge_scores,
    faithfulness,
    faithfulness_curve,
    load_circuit,
    roc_auc,
)
from interp.errors import InterpError
from interp.graph import transformer_lens_edge_name
from interp.patching import logit_diff_metric

MIB_FILE = Path(__file__).parent / "data" / "mib_ioi_gpt2_eap-ig.json"
N_PROMPTS = 3


@pytest.fixture(scope="module")
def organism():
    """A trained model (the organism: 4 layers x 8 heads) whose edges carry real effects on IOI."""
    from interp.models import load_model

    return load_model("organism", device="cpu")


@pytest.fixture(scope="module")
def pairs(organism):
    """IOI pairs of different lengths (right-padded), each read at its own END."""
    from interp.data.ioi import ioi_datasets
    from interp.data.ioi_words import ORGANISM_NAMES

    clean, corrupt = ioi_datasets(N_PROMPTS, seed=1, names=ORGANISM_NAMES, tokenizer=organism.tokenizer)
    assert len(set(clean.positions["END"].tolist())) > 1
    return clean.tokens, corrupt.tokens, clean.io_ids, clean.s_ids, clean.positions["END"]


@pytest.fixture(scope="module")
def metric(pairs):
    _, _, answers, wrongs, ends = pairs
    return logit_diff_metric(answers, wrongs, ends)


def hand_metric(model, tokens, pairs) -> float:
    """The mean logit difference of the model's own forward."""
    _, _, answers, wrongs, ends = pairs
    with torch.no_grad():
        logits = model(tokens)
    rows = torch.arange(len(tokens))
    return float((logits[rows, ends, answers] - logits[rows, ends, wrongs]).mean())


def pair_metric(pairs, i):
    """The metric of pair i alone, on [1, pos, vocab] logits (TransformerLens's metric_fn)."""
    _, _, answers, wrongs, ends = pairs
    return lambda logits: logits[0, ends[i], answers[i]] - logits[0, ends[i], wrongs[i]]


# ---------------------------------------------------------------------------------------------------------------
# The graph


@pytest.mark.parametrize("n_layers, n_heads", [(12, 12), (24, 16), (2, 4), (1, 1)])
def test_edge_count_follows_the_formula(n_layers, n_heads):
    graph = Graph(n_layers, n_heads, 64)
    into_heads = sum(3 * n_heads * (1 + layer * (n_heads + 1)) for layer in range(n_layers))
    into_mlps = sum(1 + layer * (n_heads + 1) + n_heads for layer in range(n_layers))
    into_logits = 1 + n_layers * (n_heads + 1)
    assert graph.n_edges == len(graph.edge_names()) == len(set(graph.edge_names()))
    assert graph.n_edges == into_heads + into_mlps + into_logits
    assert len(graph.node_names()) == n_layers * (n_heads + 1) + 2
    if (n_layers, n_heads) == (12, 12):
        assert (graph.n_edges, len(graph.node_names())) == (32491, 158)  # GPT-2 small, as MIB counts it


def test_edge_names_round_trip_and_bad_names_are_refused():
    graph = Graph(3, 2, 64)
    for index, name in zip(graph.edge_list(), graph.edge_names()):
        assert graph.edge_index(name) == index
    for bad in (
        "a0.h0->a0.h1<q>",
        "m1->a1.h0<k>",
        "a3.h0->logits",
        "a0.h2->m1",
        "logits->m0",
        "input->a0.h0",
        "input->a0.h0<x>",
        "a1.h0->m0",
    ):
        with pytest.raises(InterpError):
            graph.edge_index(bad)
    assert graph.edge_index("a0.h1->m0") == (graph.head_writer(0, 1), graph.mlp_reader(0))  # same layer's MLP


def test_mib_published_circuit_reads_and_writes_back_unchanged():
    circuit = load_circuit(MIB_FILE)
    data = json.loads(MIB_FILE.read_text())
    assert (circuit.graph.n_layers, circuit.graph.n_heads, circuit.graph.n_edges) == (12, 12, 32491)
    assert circuit.n_edges == sum(edge["in_graph"] for edge in data["edges"].values()) == 756
    written = circuit.to_json()
    assert written["cfg"] == data["cfg"] and written["nodes"] == data["nodes"]
    assert list(written["edges"]) == list(data["edges"])  # EAP-IG's order, edge for edge
    for name, edge in data["edges"].items():
        assert written["edges"][name]["in_graph"] == edge["in_graph"]
        assert written["edges"][name]["score"] == pytest.approx(edge["score"], rel=1e-6, abs=1e-12)
    assert {(9, 9), (9, 6), (10, 0)} <= set(circuit.heads())  # the paper's name movers are in it


def test_bad_circuit_files_are_clear_errors(tmp_path):
    cases = {
        "missing.json": None,
        "text.json": "not json",
        "shape.json": json.dumps({"nodes": {}}),
        "edge.json": json.dumps({"cfg": {"n_layers": 1, "n_heads": 1}, "edges": {"m0->a0.h0<q>": {}}}),
    }
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(InterpError):
            load_circuit(tmp_path / name)


def small_circuit(scores: dict[str, float]) -> Circuit:
    graph = Graph(2, 2, 8)
    matrix = torch.zeros(graph.n_writers, graph.n_readers)
    for name, score in scores.items():
        matrix[graph.edge_index(name)] = score
    return Circuit.of_scores(graph, matrix)


def test_pruning_keeps_the_paths_from_input_to_logits():
    circuit = small_circuit({})
    kept = ["input->a0.h0<q>", "a0.h0->logits", "a0.h1->a1.h0<v>", "input->m1", "a0.h0->m0"]
    pruned = Circuit(circuit.graph, circuit.scores, circuit.graph.mask(kept)).pruned()
    # a0.h1 is read by nothing that reaches the logits, a1.h0 and m1 write to nothing, m0's output goes nowhere
    assert sorted(pruned.edges()) == ["a0.h0->logits", "input->a0.h0<q>"]


def test_top_n_and_greedy_selection():
    circuit = small_circuit(
        {"input->m0": 10.0, "a1.h0->logits": -5.0, "input->a1.h0<q>": 4.0, "a0.h0->logits": 3.0, "m0->a1.h0<k>": 0.5}
    )
    assert circuit.top_n(2, prune=False).edges() == ["input->m0", "a1.h0->logits"]
    assert circuit.top_n(2).edges() == []  # neither kept edge lies on a path from input to logits
    assert circuit.top_n(3).edges() == ["a1.h0->logits", "input->a1.h0<q>"]
    # greedy grows from the logits: input->m0 only becomes a candidate once m0 is in the circuit
    assert circuit.greedy(2).edges() == ["a1.h0->logits", "input->a1.h0<q>"]
    assert circuit.greedy(4, prune=False).edges() == [
        "a1.h0->logits",
        "input->a1.h0<q>",
        "a0.h0->logits",
        "m0->a1.h0<k>",
    ]
    # the fifth brings input->m0; pruning then drops a0.h0->logits (nothing feeds a0.h0)
    assert circuit.greedy(5).edges() == ["input->m0", "a1.h0->logits", "input->a1.h0<q>", "m0->a1.h0<k>"]
    # edges scored 0 carry no evidence: a budget larger than the scored edges keeps only those
    assert len(circuit.top_n(10, prune=False).edges()) == len(circuit.greedy(10, prune=False).edges()) == 5
    with pytest.raises(InterpError):
        circuit.top_n(circuit.graph.n_edges + 1)


# ---------------------------------------------------------------------------------------------------------------
# Edge scores against TransformerLens and hooks


def tl_edge_scores(model, first, second, pairs) -> torch.Tensor:
    """TransformerLens 4.3's edge attribution (clean=first, corrupt=second), per-position scores summed over
    positions, averaged over the pairs, as a [writers, readers] matrix."""
    from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig, attribution_patch

    graph = Graph.of(model)
    scores = torch.zeros(graph.n_writers, graph.n_readers)
    for i in range(N_PROMPTS):
        result = attribution_patch(
            model, first[i : i + 1], second[i : i + 1], pair_metric(pairs, i), EdgeAttributionConfig(granularity="edge")
        )
        for (writer, reader), score in result.edge_scores.items():
            scores[graph.edge_index(transformer_lens_edge_name(writer, reader))] += score / N_PROMPTS
    return scores


def test_eap_equals_transformer_lens_edge_attribution(organism, pairs, metric):
    """TransformerLens takes the gradient on its corrupted run and scores clean - corrupted (denoising); EAP-IG
    and MIB take it on the clean run and score corrupted - clean. Called with the pairs swapped, TransformerLens
    computes our quantity exactly."""
    clean, corrupt, *_ = pairs
    ours = edge_scores(organism, clean, corrupt, metric, method="eap")
    reference = tl_edge_scores(organism, corrupt, clean, pairs)
    assert ours.scores.abs().max() > 1.0
    torch.testing.assert_close(ours.scores, reference, atol=1e-4, rtol=0)
    assert ours.clean_metric == pytest.approx(hand_metric(organism, clean, pairs), abs=1e-4)


def test_eap_ig_with_one_step_takes_the_gradient_at_the_corrupted_input(organism, pairs, metric):
    """EAP-IG's first point (k = 0) is the corrupted input: with one step it is TransformerLens's own convention
    (gradient on the corrupted run) with the opposite difference."""
    clean, corrupt, *_ = pairs
    ours = edge_scores(organism, clean, corrupt, metric, method="eap-ig", steps=1)
    torch.testing.assert_close(ours.scores, -tl_edge_scores(organism, clean, corrupt, pairs), atol=1e-4, rtol=0)


def hook_exact_scores(model, clean, corrupt, pairs, names, intervention):
    """Each edge patched by hooks on the bridge: the writer's replacement minus its clean output (hook_embed +
    hook_pos_embed, attn.hook_result, hook_mlp_out) added to the reader's own input (hook_q/k/v_input at its
    head, hook_mlp_in, the last hook_resid_post); the metric's change."""
    _, _, answers, wrongs, ends = pairs
    n_layers = model.cfg.n_layers

    def metric(logits):
        rows = torch.arange(len(logits))
        return float((logits[rows, ends, answers] - logits[rows, ends, wrongs]).mean())

    def writer(cache, name):
        if name == "input":
            return cache["hook_embed"] + cache["hook_pos_embed"]
        if name.startswith("a"):
            layer, head = map(int, name[1:].split(".h"))
            return cache[f"blocks.{layer}.attn.hook_result"][:, :, head]
        return cache[f"blocks.{name[1:]}.hook_mlp_out"]

    flags = ("set_use_split_qkv_input", "set_use_attn_result", "set_use_hook_mlp_in")
    for flag in flags:
        getattr(model, flag)(True)
    try:
        with torch.no_grad():
            base_logits, clean_cache = model.run_with_cache(clean)
            corrupt_cache = model.run_with_cache(corrupt)[1]
        base = metric(base_logits)
        scores = {}
        for name in names:
            writer_name, reader = name.split("->")
            clean_output = writer(clean_cache, writer_name)
            if intervention == "patching":
                replacement = writer(corrupt_cache, writer_name)
            elif intervention == "mean":  # over the prompts and their positions up to END (not the padding)
                counted = (torch.arange(clean.shape[1])[None] <= ends[:, None]).float()[:, :, None]
                replacement = (writer(corrupt_cache, writer_name) * counted).sum((0, 1)) / counted.sum()
            else:
                replacement = torch.zeros_like(clean_output)
            delta = replacement - clean_output
            head = None
            if reader == "logits":
                hook = f"blocks.{n_layers - 1}.hook_resid_post"
            elif reader.startswith("m"):
                hook = f"blocks.{reader[1:]}.hook_mlp_in"
            else:
                layer, rest = reader[1:].split(".h")
                head, hook = int(rest[:-3]), f"blocks.{layer}.hook_{rest[-2]}_input"

            def patch(x, hook, head=head, delta=delta):
                x = x.clone()
                if head is None:
                    return x + delta
                x[:, :, head] += delta
                return x

            with torch.no_grad():
                scores[name] = metric(model.run_with_hooks(clean, fwd_hooks=[(hook, patch)])) - base
        return scores
    finally:
        for flag in flags:
            getattr(model, flag)(False)


@pytest.mark.parametrize("intervention", ["patching", "mean", "zero"])
def test_exact_edge_patching_equals_hook_reference(organism, pairs, metric, intervention):
    clean, corrupt, *_ = pairs
    graph = Graph.of(organism)
    names = random.Random(0).sample(graph.edge_names(), 24) + [
        "input->a0.h1<k>",
        "a0.h2->a1.h3<q>",
        "a0.h0->m0",
        "m0->a1.h1<v>",
        "m1->logits",
        "a1.h2->logits",
    ]
    ours = edge_scores(organism, clean, corrupt, metric, method="exact", edges=names, intervention=intervention)
    reference = hook_exact_scores(organism, clean, corrupt, pairs, names, intervention)
    for name in names:
        assert float(ours.scores[graph.edge_index(name)]) == pytest.approx(reference[name], abs=1e-4), name
    unscored = torch.ones_like(graph.real)
    for name in names:
        unscored[graph.edge_index(name)] = False
    assert ours.scores[unscored & graph.real].isnan().all()


def test_exact_scores_agree_with_cutting_each_edge_from_the_circuit(organism, pairs, metric):
    """Two independent paths: the engine's per-edge variants, and the per-reader forward with one edge cut."""
    clean, corrupt, *_ = pairs
    graph = Graph.of(organism)
    exact = edge_scores(organism, clean, corrupt, metric, method="exact")
    assert not exact.scores[graph.real].isnan().any()
    chosen = random.Random(1).sample(graph.edge_list(), 8)
    masks = [graph.real.clone() for _ in chosen]
    for mask, edge in zip(masks, chosen):
        mask[edge] = False
    full, *values = circuit_metrics(organism, clean, corrupt, metric, [graph.real, *masks])
    assert full == pytest.approx(exact.clean_metric, abs=1e-5)
    for edge, value in zip(chosen, values):
        assert value - full == pytest.approx(float(exact.scores[edge]), abs=1e-4)


def test_eap_ig_is_closer_to_exact_patching_than_eap(organism, pairs, metric):
    clean, corrupt, *_ = pairs
    graph = Graph.of(organism)
    exact = edge_scores(organism, clean, corrupt, metric, method="exact").scores[graph.real]
    errors = {
        method: float(
            (edge_scores(organism, clean, corrupt, metric, method=method, steps=20).scores[graph.real] - exact)
            .abs()
            .mean()
        )
        for method in ("eap", "eap-ig")
    }
    assert errors["eap-ig"] < errors["eap"]


def test_chunked_scoring_and_evaluation_give_the_same_numbers(organism, pairs, metric):
    from interp.edge_scores import scoring_bytes_per_prompt
    from interp.engine import Transformer

    clean, corrupt, *_ = pairs
    graph = Graph.of(organism)
    n_pos = int(pairs[4].max()) + 1  # positions after the last END are never computed
    one_prompt = scoring_bytes_per_prompt(Transformer(organism), graph, n_pos, 4)
    for method in ("eap", "eap-ig"):
        whole = edge_scores(organism, clean, corrupt, metric, method=method)
        chunked = edge_scores(organism, clean, corrupt, metric, method=method, max_memory=one_prompt + 1)
        assert (whole.chunk_prompts, chunked.chunk_prompts) == (N_PROMPTS, 1)
        torch.testing.assert_close(chunked.scores, whole.scores, atol=1e-5, rtol=1e-5)
    with pytest.raises(InterpError, match="over the budget"):
        edge_scores(organism, clean, corrupt, metric, method="eap", max_memory=one_prompt // 2)
    circuit = Circuit.of_scores(graph, whole.scores).top_n(40)
    per_prompt = 4 * 4 * n_pos * graph.n_writers * organism.cfg.d_model
    assert circuit_metrics(organism, clean, corrupt, metric, [circuit], max_memory=per_prompt) == pytest.approx(
        circuit_metrics(organism, clean, corrupt, metric, [circuit]), abs=1e-5
    )


# ---------------------------------------------------------------------------------------------------------------
# Circuits and their evaluation


def test_faithfulness_equals_transformer_lens_ablate_outside(organism, pairs):
    """TransformerLens's faithfulness keeps edges per position: our circuit is its edges at every position."""
    from transformer_lens.tools.analysis.attribution_patching import Node
    from transformer_lens.tools.analysis.attribution_patching import faithfulness as tl_faithfulness

    clean, corrupt, answers, wrongs, ends = pairs
    i = 0
    metric = logit_diff_metric(answers[i : i + 1], wrongs[i : i + 1], ends[i : i + 1])
    graph = Graph.of(organism)
    scores = edge_scores(organism, clean[i : i + 1], corrupt[i : i + 1], metric, method="eap")
    circuit = Circuit.of_scores(graph, scores.scores).top_n(30)
    ours = faithfulness(organism, circuit, clean[i : i + 1], corrupt[i : i + 1], metric)

    def node(name, position):
        if name == "input":
            return Node("embed", position)
        if name == "logits":
            return Node("logits", position, graph.n_layers - 1)
        if name.startswith("m"):
            return Node("mlp_out", position, int(name[1:]))
        layer, head = name[1:].split(".h")
        if head.endswith(">"):
            return Node(f"{head[-2]}_input", position, int(layer), int(head[:-3]))
        return Node("attn_head_out", position, int(layer), int(head))

    def reader(name, position):
        return Node("mlp_in", position, int(name[1:])) if name.startswith("m") else node(name, position)

    n_pos = clean.shape[1]
    edges = [(node(w, p), reader(r, p)) for w, r in (e.split("->") for e in circuit.edges()) for p in range(n_pos)]
    reference = tl_faithfulness(organism, clean[i : i + 1], corrupt[i : i + 1], pair_metric(pairs, i), edges)
    assert circuit.n_edges > 5
    assert ours == pytest.approx(reference.recovered, abs=1e-4)


def test_roc_auc_counts_pairs_ties_half():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(-5, 6, (60,), generator=generator).float()
    positive = torch.rand(60, generator=generator) < 0.3
    magnitudes = scores.abs()
    wins = sum((1.0 if a > b else 0.5 if a == b else 0.0) for a in magnitudes[positive] for b in magnitudes[~positive])
    assert roc_auc(scores, positive) == pytest.approx(wins / (int(positive.sum()) * int((~positive).sum())))
    assert roc_auc(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([True, False, False])) == 1.0
    with pytest.raises(InterpError):
        roc_auc(scores, torch.zeros(60, dtype=torch.bool))


def test_faithfulness_curve_cpr_and_cmd_by_hand(organism, pairs, metric):
    clean, corrupt, *_ = pairs
    scores = edge_scores(organism, clean, corrupt, metric, method="eap-ig")
    curve = faithfulness_curve(organism, scores, clean, corrupt, metric)
    graph = scores.graph
    assert curve.budgets == list(MIB_BUDGETS)
    all_edges = Circuit.of_scores(graph, scores.scores)
    circuits = [all_edges.top_n(int(b * graph.n_edges)) for b in MIB_BUDGETS]
    assert curve.n_edges == [c.n_edges for c in circuits]
    full, empty, *values = circuit_metrics(
        organism, clean, corrupt, metric, [graph.real, torch.zeros_like(graph.real), *circuits]
    )
    assert curve.faithfulness == pytest.approx([(v - empty) / (full - empty) for v in values], abs=1e-6)
    assert curve.faithfulness[-1] == pytest.approx(1.0)  # every edge: the model itself
    assert empty == pytest.approx(hand_metric(organism, corrupt, pairs), abs=1e-4)  # every edge corrupted
    trapezoids = [
        (x2 - x1) * (y1 + y2) / 2
        for x1, x2, y1, y2 in zip(MIB_BUDGETS, MIB_BUDGETS[1:], curve.faithfulness, curve.faithfulness[1:])
    ]
    assert curve.cpr == pytest.approx(sum(trapezoids))
    assert curve.cmd == pytest.approx(area(MIB_BUDGETS, [abs(1 - f) for f in curve.faithfulness]))
    assert area([0.0, 0.5, 1.0], [0.0, 1.0, 1.0]) == pytest.approx(0.75)


def test_bad_arguments_are_clear_errors(organism, pairs, metric):
    clean, corrupt, *_ = pairs
    for kwargs, problem in (
        ({"method": "acdc"}, "unknown method"),
        ({"intervention": "resample"}, "unknown inter"),
        ({"method": "eap-ig", "intervention": "mean"}, "needs intervention 'patching'"),
        ({"method": "eap", "edges": ["m0->logits"]}, "only exact patching"),
        ({"method": "exact", "edges": ["m5->logits"]}, "not an edge"),
    ):
        with pytest.raises(InterpError, match=problem):
            edge_scores(organism, clean, corrupt, metric, **kwargs)
    with pytest.raises(InterpError, match="does not fit"):
        circuit_metrics(organism, clean, corrupt, metric, [torch.zeros(3, 3, dtype=torch.bool)])


# ---------------------------------------------------------------------------------------------------------------
# The command


def test_discover_bad_input_is_one_line(capsys, tmp_path):
    from interp.cli import main

    for argv, problem in (
        (["--method", "acdc"], "invalid choice: 'acdc'"),
        (["--n", "0"], "--n must be at least 1"),
        (["--ioi-results", str(tmp_path / "none.json")], "no results file"),
        (["--bootstrap", "-1"], "--bootstrap takes a whole number"),
        (["--random-circuits", "-1"], "--random-circuits takes a number >= 0"),
    ):
        assert main(["discover", "--model", "organism", "--out", str(tmp_path), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and problem in err, err
    assert not (tmp_path / "results.json").exists()


def test_discover_on_the_organism_compares_with_its_path_patching_classes(tmp_path, capsys):
    from interp.cli import main

    ioi_results = Path(__file__).parent.parent / "results" / "ioi" / "organism" / "results.json"
    assert (
        main(
            [
                "discover",
                "--model",
                "organism",
                "--method",
                "eap",
                "--n",
                "8",
                "--names",
                "organism",
                "--ioi-results",
                str(ioi_results),
                "--out",
                str(tmp_path),
                "--quiet",
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "results.json").read_text())
    comparison = results["head_comparison"]
    assert set(comparison["per_class"]) == set(json.loads(ioi_results.read_text())["heads"])
    found = {tuple(h) for h in results["circuit"]["heads"]}
    assert {tuple(h) for entry in comparison["per_class"].values() for h in entry["found"]} <= found
    circuit = load_circuit(tmp_path / "circuit.json")
    assert sorted(circuit.edges()) == sorted(results["circuit"]["edges"])
    graph = circuit.graph
    assert dict(zip(results["edge_names"], results["scores"]))["input->m0"] == pytest.approx(
        float(circuit.scores[graph.edge_index("input->m0")]), rel=1e-5, abs=1e-9
    )
    assert main(["plot", str(tmp_path / "results.json"), "--out", str(tmp_path / "again")]) == 0
    assert {p.name for p in (tmp_path / "again").iterdir()} == {
        f"discover_{n}.{s}" for n in ("faithfulness", "circuit") for s in ("png", "svg")
    }


@pytest.mark.slow
def test_eap_ig_finds_the_planted_ioi_circuit(tmp_path, capsys):
    """The targets on planted:ioi: edge ROC AUC >= 0.95 against `interp.planted.ioi_edges()`, and a circuit of at
    most 2% of the edges with faithfulness >= 0.9."""
    from interp.cli import main
    from interp.models import load_model

    assert (
        main(
            [
                "discover",
                "--model",
                "planted:ioi",
                "--n",
                "16",
                "--random-circuits",
                "3",
                "--out",
                str(tmp_path),
                "--quiet",
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["graph"] == {"n_layers": 12, "n_heads": 12, "n_nodes": 158, "n_edges": 32491}
    assert results["reference"]["n_reference_edges"] == 202
    assert results["reference"]["edge_roc_auc"] >= 0.95
    assert results["circuit"]["faithfulness"] >= 0.9 and results["circuit"]["fraction_of_edges"] <= 0.02
    # every class whose heads act in the unablated model is found whole; backup name movers act only when the
    # name movers are ablated, so EAP-IG on the intact model need not see them
    per_class = results["head_comparison"]["per_class"]
    assert all(len(entry["found"]) == entry["of"] for name, entry in per_class.items() if name != "backup_name_mover")
    assert "edge ROC AUC" in capsys.readouterr().out
    # noise-free ground truth: every found edge of the planted circuit is selected in every resample, except the
    # edges of backup name movers, whose small effects in the intact model vary from prompt to prompt (16 prompts,
    # seed 0: 122 edges at 1.0; the backups' 47 at 0.61 to 0.99); no random circuit comes as close to the model
    source = load_model("planted:ioi").interp_source
    backups = {f"a{layer}.h{head}" for layer, head in source.circuit["backup_name_mover"]}
    found = {
        edge: share
        for edge, share in results["selection"]["found"].items()
        if edge in source.circuit_edges and not backups & {node.split("<")[0] for node in edge.split("->")}
    }
    assert len(found) > 100 and set(found.values()) == {1.0}
    assert results["random_circuits"]["p_value"] == pytest.approx(1 / 4, abs=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_scores_and_circuit_runs_on_cuda_equal_cpu(organism, pairs, metric):
    from interp.models import load_model

    clean, corrupt, *_ = pairs
    on_gpu = load_model("organism", device="cuda")
    for method in ("eap", "eap-ig", "exact"):
        cpu = edge_scores(organism, clean, corrupt, metric, method=method)
        gpu = edge_scores(on_gpu, clean, corrupt, metric, method=method)
        torch.testing.assert_close(gpu.scores, cpu.scores, atol=1e-3, rtol=1e-3)
        assert gpu.peak_memory is not None and cpu.peak_memory is None
    circuit = Circuit.of_scores(cpu.graph, cpu.scores).top_n(50)
    assert circuit_metrics(on_gpu, clean, corrupt, metric, [circuit]) == pytest.approx(
        circuit_metrics(organism, clean, corrupt, metric, [circuit]), abs=1e-3
    )
