"""Indirect object identification (Wang et al. 2023): find the circuit by measurement, then evaluate it.

    python circuits/ioi.py --model organism          (or: interp ioi --model gpt2)

Method, in the paper's order. p_IOI prompts ("When Mary and John went to the store, John gave a drink to") are
measured by the logit difference IO - S at END; p_ABC, the same prompts with three unrelated names, is the
corrupted distribution. Every discovery step is a path-patching measurement from each sender head to a receiver,
reported as the relative change of the logit difference, (patched - clean) / clean:
 1. senders -> final residual stream (direct effect): strongly negative = name movers, positive = negative name
    movers (of those, only heads that attend from END mostly to the names: what they write is the name they
    read, IO copied or, as in the organism's early layers, S written against);
 2. senders -> name movers' queries: S-inhibition heads;
 3. senders -> S-inhibition heads' values: induction and duplicate-token heads, told apart by where they look
    from S2 (S1+1: induction; S1: duplicate token);
 4. senders -> induction heads' keys: previous-token heads;
 5. name movers mean-ablated: heads whose direct logit attribution rises are backup name movers.
A head joins a class when its effect passes THRESHOLD (a fraction of the clean logit difference). The paper's
head list is only compared with, never used to decide. Then the circuit is evaluated as the paper's code does, on
(head, position) nodes: name movers (negative, backup) and S-inhibition heads at END, induction and duplicate-token
heads at S2, previous-token heads at S1+1, every other head and position mean-ablated over p_ABC within template
(`interp.circuit`): faithfulness F(C) vs F(M); completeness, F(C\K) vs F(M\K) for whole classes, random subsets
and a greedy search; minimality per node. On GPT-2 small's shape the paper's own 26-head circuit is evaluated
the same way beside the found one, and on a planted model (`interp.planted`) the circuit it was built with, with
precision and recall of the found heads against it. The dataset is the paper's by default (`Protocol`): its 99
names, templates 0-6 of each order drawn per prompt, no BOS token, p_ABC drawn as its code draws it.
"""
from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from interp.ablation import ablated, heads, mean_activations
from interp.cache import run_with_selective_cache
from interp.circuit import Node, NodeRuns, completeness, minimality
from interp.cli import add_model, add_prepend_bos, add_workers, load, workers_for
from interp.data.ioi import PAPER_HEADS, Corruption, IOIDataset, TemplateOrder, dataset_json, ioi_datasets
from interp.data.ioi_words import ORGANISM_NAMES, PAPER_NAMES
from interp.errors import InterpError
from interp.lens import head_logit_contributions, lens_logits
from interp.metrics import answer_probs, logit_diffs
from interp.patching import logit_diff_metric, path_patch
from interp.results import default_out_dir, provenance, read_json, write_json
from interp.tokens import str_tokens
from interp.views import attention_view, save_view
from interp.workers import Workers, fill_in

THRESHOLD = 0.05  # a path-patching effect counts when it moves the logit difference by 5% of its clean value
NAME_ATTENTION = 0.5  # a (negative) name mover puts more than half its attention from END on IO, S1 and S2
CLASSES = ("name_mover", "negative_name_mover", "backup_name_mover", "s_inhibition", "induction",
           "duplicate_token", "previous_token")


def ld(model, data: IOIDataset, logits=None) -> torch.Tensor:
    """Per-prompt logit difference IO - S at END."""
    if logits is None:
        with torch.inference_mode():
            logits = model(data.tokens)
    return logit_diffs(logits, data.io_ids, data.s_ids, data.positions["END"])


def selected(effect: torch.Tensor, sign: int, exclude=()) -> list[tuple[int, int]]:
    """Heads whose relative effect passes THRESHOLD in the direction `sign`, strongest first."""
    hits = [(sign * effect[l, h].item(), (l, h)) for l, h in torch.nonzero(sign * effect >= THRESHOLD).tolist()]
    return [head for _, head in sorted(hits, reverse=True) if head not in exclude]


def attention(model, data: IOIDataset, from_key: str, to_keys: list[str]) -> torch.Tensor:
    """[layer, head, len(to_keys)]: mean attention from position `from_key` to each of `to_keys`."""
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    _, cache = run_with_selective_cache(model, data.tokens, names)
    rows = torch.arange(len(data))
    query = data.positions[from_key]
    return torch.stack([
        torch.stack([cache[name][rows, :, query, data.positions[key]].mean(0) for key in to_keys], -1)
        for name in names])


def direct_logit_attribution(model, data: IOIDataset, **ablation) -> torch.Tensor:
    """[layer, head]: each head's mean direct contribution to logit(IO) - logit(S) at END, through the final
    LayerNorm's scale of the whole residual (optionally with components ablated)."""
    with ablated(model, **ablation) if ablation else nullcontext():
        contributions = head_logit_contributions(model, data.tokens, data.positions["END"],
                                                 torch.stack([data.io_ids, data.s_ids], -1))
    return (contributions[..., 0] - contributions[..., 1]).mean(0)


def copy_scores(model, data: IOIDataset, head_list, sign: int = 1) -> dict[str, float]:
    """Fraction of prompts where the head's OV circuit, applied to the residual at the IO name after block 0,
    puts that name among the top 5 tokens (sign -1: among the bottom 5, for negative heads)."""
    _, cache = run_with_selective_cache(model, data.tokens, ["blocks.1.hook_resid_pre"])
    rows = torch.arange(len(data))
    resid = cache["blocks.1.hook_resid_pre"][rows, data.positions["IO"]]  # [batch, d_model]
    scores = {}
    with torch.inference_mode():
        for layer, head in head_list:
            normed = model.blocks[layer].ln1(resid) if hasattr(model.blocks[layer], "ln1") else resid
            ov = normed @ model.W_V[layer, head] @ model.W_O[layer, head]
            logits = sign * lens_logits(model, ov)
            top5 = logits.topk(5, dim=-1).indices
            scores[f"{layer}.{head}"] = (top5 == data.io_ids[:, None]).any(-1).float().mean().item()
    return scores


# Where each class does its work: the circuit's nodes are its heads at these positions only.
CLASS_POSITIONS = {"name_mover": "END", "negative_name_mover": "END", "backup_name_mover": "END",
                   "s_inhibition": "END", "induction": "S2", "duplicate_token": "S2", "previous_token": "S1+1"}
# The paper's code orders GPT-2 small's name movers (with the backups) by importance; its minimality sets K_v
# follow that order (see `k_sets`).
PAPER_NAME_MOVER_ORDER = [(9, 9), (10, 0), (9, 6), (10, 10), (10, 6), (10, 2), (10, 1), (11, 2), (9, 7), (9, 0),
                          (11, 9)]


def circuit_nodes(classes: dict[str, list]) -> dict[str, list[Node]]:
    return {name: [(layer, head, CLASS_POSITIONS[name]) for layer, head in members]
            for name, members in classes.items()}


def k_sets(by_class: dict[str, list[Node]], paper_sets: bool) -> dict[Node, list[Node]]:
    """Minimality's K_v for every node v: v's class; with `paper_sets` (GPT-2 small's shape), the paper's own sets
    where it gives them: a name mover's K_v is the importance-ordered name-mover list up to it, 9.0's and 11.9's
    all name movers and the negative ones, 5.8's and 5.9's {11.10, 10.7, v}."""
    nodes = [node for members in by_class.values() for node in members]
    of_heads = lambda heads: [n for n in nodes if n[:2] in heads]  # noqa: E731
    sets = {node: members for members in by_class.values() for node in members}
    if not paper_sets:
        return sets
    for node in nodes:
        head = node[:2]
        if head in ((9, 0), (11, 9)):
            sets[node] = of_heads(PAPER_NAME_MOVER_ORDER + PAPER_HEADS["negative_name_mover"])
        elif head in ((5, 8), (5, 9)):
            sets[node] = of_heads([(11, 10), (10, 7)]) + [node]
        elif head in PAPER_NAME_MOVER_ORDER:
            sets[node] = of_heads(PAPER_NAME_MOVER_ORDER[:PAPER_NAME_MOVER_ORDER.index(head) + 1])
    return sets


def node_runs(model, clean: IOIDataset, corrupt: IOIDataset, workers: Workers | None = None) -> NodeRuns:
    """Node-level runs of p_IOI measured by the logit difference, means over p_ABC within template: built once,
    shared by every circuit evaluated on the same prompts (runs of the same node sets are not repeated)."""
    return NodeRuns.build(model, clean.tokens, clean.positions, corrupt.tokens, clean.template_ids,
                          corrupt.template_ids,
                          metric=logit_diff_metric(clean.io_ids, clean.s_ids, clean.positions["END"]),
                          workers=workers)


def evaluate_circuit(runs: NodeRuns, classes: dict[str, list], n_random: int = 10, greedy_steps: int = 5,
                     greedy_candidates: int = 5, seed: int = 0) -> dict:
    """The paper's evaluation of a circuit of (head, position) nodes, every other node mean-ablated over p_ABC
    within template (`node_runs`): faithfulness, completeness (class, random and greedy knock-outs) and
    minimality."""
    model = runs.model
    by_class = circuit_nodes(classes)
    circuit = sorted(node for members in by_class.values() for node in members)  # same set, same evaluation
    name_movers = by_class["name_mover"] + by_class["backup_name_mover"]
    runs.prefetch([([], True), (circuit, False), (name_movers, True)])
    f_model, f_circuit = runs.full_model(), runs.circuit(circuit)
    paper_shape = (model.cfg.n_layers, model.cfg.n_heads) == (12, 12)
    return {
        "nodes": [list(node) for node in circuit], "model_logit_diff": f_model, "circuit_logit_diff": f_circuit,
        "faithfulness": f_circuit / f_model, "faithfulness_gap": abs(f_model - f_circuit),
        "completeness": completeness(runs, circuit, by_class, n_random, greedy_steps, greedy_candidates, seed),
        "minimality": minimality(runs, circuit, k_sets(by_class, paper_shape), f_circuit),
        "minimality_sets": "paper" if paper_shape else "class",
        "name_movers_and_backups_knocked_out_logit_diff": runs.model_without(name_movers),
    }


def discover(model, clean: IOIDataset, corrupt: IOIDataset, quiet: bool = False, workers: Workers | None = None
             ) -> dict:
    """The paper's discovery steps; returns classes, every measured grid, mechanism checks and costs. `workers`
    share each path-patching step's senders out (default: all in this process)."""
    metric = logit_diff_metric(clean.io_ids, clean.s_ids, clean.positions["END"])
    all_senders = [(layer, head) for layer in range(model.cfg.n_layers) for head in range(model.cfg.n_heads)]
    clean_ld = ld(model, clean).mean().item()
    grids, cost, found = {}, {}, {name: [] for name in CLASSES}
    steps = tqdm(total=5, desc="IOI discovery", disable=quiet)

    def step(name: str, receivers, n_senders: int) -> torch.Tensor:
        start = time.perf_counter()

        def from_senders(replica, senders: list[tuple[int, int]]) -> torch.Tensor:
            return path_patch(replica, clean.tokens, corrupt.tokens, metric, receivers, senders)

        shares = (workers or Workers(model)).map(from_senders, all_senders, f"path patching ({name})")
        patched = fill_in(shares).to(model.cfg.device)
        effect = ((patched - clean_ld) / abs(clean_ld)).nan_to_num(0.0)
        grids[name] = effect
        # forward passes of N prompts: the clean and corrupt runs, then one patched run per sender
        cost[name] = {"forward_passes": (2 + n_senders) * len(clean), "seconds": time.perf_counter() - start}
        steps.update()
        return effect

    n_heads_total = model.cfg.n_layers * model.cfg.n_heads
    at_end = attention(model, clean, "END", ["IO", "S1", "S2"])  # [layer, head, 3]
    # Name movers move the name they look at into the logits: of the heads with a direct effect, only those
    # that put most of their attention from END on the names are (negative) name movers.
    looks_at_names = {(l, h) for l, h in torch.nonzero(at_end.sum(-1) > NAME_ATTENTION).tolist()}
    direct = step("direct_effect", "resid_final", n_heads_total)
    found["name_mover"] = [h for h in selected(direct, -1) if h in looks_at_names]
    found["negative_name_mover"] = [h for h in selected(direct, +1) if h in looks_at_names]
    if found["name_mover"]:
        into_queries = step("into_name_mover_queries", [(l, h, "q") for l, h in found["name_mover"]],
                            n_heads_total)
        found["s_inhibition"] = selected(into_queries, -1, exclude=found["name_mover"])
    else:
        steps.update()

    looks = attention(model, clean, "S2", ["S1", "S1+1"])  # [layer, head, 2]
    if found["s_inhibition"]:
        into_values = step("into_s_inhibition_values", [(l, h, "v") for l, h in found["s_inhibition"]],
                           n_heads_total)
        for head in selected(into_values, -1, exclude=found["s_inhibition"] + found["name_mover"]):
            to_s1, to_s1_plus_1 = looks[head].tolist()
            found["induction" if to_s1_plus_1 > to_s1 else "duplicate_token"].append(head)
    else:
        steps.update()
    if found["induction"]:
        into_keys = step("into_induction_keys", [(l, h, "k") for l, h in found["induction"]], n_heads_total)
        found["previous_token"] = selected(into_keys, -1, exclude=[h for v in found.values() for h in v])
    else:
        steps.update()

    if found["name_mover"]:
        # Backup name movers: knock the name movers out (mean over p_ABC); whose direct effect rises?
        start = time.perf_counter()
        means = mean_activations(model, corrupt.tokens, heads(found["name_mover"]), groups=corrupt.template_ids)
        before = direct_logit_attribution(model, clean)
        after = direct_logit_attribution(model, clean, components=heads(found["name_mover"]), method="mean",
                                         means=means, groups=clean.template_ids)
        rise = (after - before) / abs(clean_ld)
        grids["backup_rise"] = rise
        found["backup_name_mover"] = selected(rise, +1, exclude=found["name_mover"] + found["negative_name_mover"])
        cost["backup"] = {"forward_passes": 3 * len(clean), "seconds": time.perf_counter() - start}
    steps.update()
    steps.close()

    mechanism = {
        "name_mover_attention": {f"{l}.{h}": {"to_IO": at_end[l, h, 0].item(),
                                              "to_S": (at_end[l, h, 1] + at_end[l, h, 2]).item()}
                                 for l, h in found["name_mover"] + found["backup_name_mover"]},
        "name_mover_copy_score": copy_scores(model, clean, found["name_mover"]),
        "negative_name_mover_copy_score": copy_scores(model, clean, found["negative_name_mover"], sign=-1),
        "s_inhibition_attention_to_S2": {f"{l}.{h}": at_end[l, h, 2].item() for l, h in found["s_inhibition"]},
        "attention_from_S2": {f"{l}.{h}": {"to_S1": looks[l, h, 0].item(), "to_S1+1": looks[l, h, 1].item()}
                              for l, h in found["induction"] + found["duplicate_token"]},
    }
    if found["previous_token"]:
        prev = attention(model, clean, "S1+1", ["S1"])
        mechanism["previous_token_attention_to_S1"] = {f"{l}.{h}": prev[l, h, 0].item()
                                                       for l, h in found["previous_token"]}
    return {"heads": found, "grids": grids, "mechanism": mechanism, "cost": cost}


def example_attention(model, data: IOIDataset, head_list) -> dict:
    """The attention patterns of `head_list` on the first prompt (unpadded), for the results file's figure."""
    length = int(data.positions["END"][0]) + 1
    layers = sorted({layer for layer, _ in head_list})
    _, cache = run_with_selective_cache(model, data.tokens[:1, :length],
                                        [f"blocks.{layer}.attn.hook_pattern" for layer in layers])
    return {"tokens": str_tokens(data.tokens[0, :length], model.tokenizer),
            "heads": {f"{l}.{h}": cache[f"blocks.{l}.attn.hook_pattern"][0, h].tolist() for l, h in head_list}}


def paper_comparison(found: dict[str, list], reference: dict[str, list] = PAPER_HEADS) -> dict:
    """Per class, precision and recall of the found heads against a known circuit: the paper's (GPT-2 small), or
    the one a planted model was built with."""
    comparison = {}
    for name, heads in reference.items():
        known = [tuple(head) for head in heads]
        hits = len(set(map(tuple, found[name])) & set(known))
        comparison[name] = {"precision": hits / len(found[name]) if found[name] else None,
                            "recall": hits / len(known) if known else None, "known": known, "found": found[name]}
    return comparison


def known_circuits(model) -> dict[str, dict]:
    """Circuits to evaluate beside the found one, never used to find it: the paper's 26 heads on GPT-2 small's
    shape, and the circuit a planted model was built with (`interp.planted`)."""
    known = {}
    if (model.cfg.n_layers, model.cfg.n_heads) == (12, 12):
        known["paper"] = PAPER_HEADS
    if model.interp_source.circuit is not None:
        known["planted"] = model.interp_source.circuit
    return known


NAME_LISTS = {"paper": PAPER_NAMES, "organism": ORGANISM_NAMES}


@dataclass(frozen=True)
class Protocol:
    """Every choice of a run, the paper's by default; all recorded in results.json."""

    names: str = "paper"  # the paper's 99 names, or "organism": the 109 the organism was trained on
    order: TemplateOrder = "mixed"  # with n_templates 15: templates 0-6 of each order, drawn per prompt
    n_templates: int | None = None  # the paper's nb_templates: all 15 by default
    corruption: Corruption = "paper"  # how p_ABC's names are drawn (see interp.data.ioi.corrupted_names)
    prepend_bos: bool = False
    random_knockouts: int = 10  # completeness: random subsets of the circuit
    greedy_steps: int = 5  # completeness: the greedy search's largest knock-out set
    greedy_candidates: int = 5  # completeness: nodes tried at each greedy step

    def datasets(self, model, n: int, seed: int) -> tuple[IOIDataset, IOIDataset]:
        if self.names not in NAME_LISTS:
            raise InterpError(f"unknown name list {self.names!r}; use {' or '.join(NAME_LISTS)}")
        return ioi_datasets(n, seed=seed, order=self.order, names=NAME_LISTS[self.names], tokenizer=model.tokenizer,
                            prepend_bos=self.prepend_bos, n_templates=self.n_templates, corruption=self.corruption)

    def evaluate(self, runs: NodeRuns, classes: dict, seed: int) -> dict:
        return evaluate_circuit(runs, classes, self.random_knockouts, self.greedy_steps, self.greedy_candidates,
                                seed)


def run(model, out_dir: str | Path, n: int = 100, seed: int = 0, quiet: bool = False,
        protocol: Protocol = Protocol(), workers: Workers | None = None) -> dict:
    """The whole reproduction: dataset, discovery, evaluation (and the `known_circuits` evaluated the same way);
    writes results.json (with the exact dataset, so that every number can be recomputed from the file) and the
    figures. `workers` share the path-patching senders and the evaluation's node sets out."""
    workers = workers or Workers(model)
    from interp.plotting import ioi_figures

    torch.manual_seed(seed)
    start = time.perf_counter()
    clean, corrupt = protocol.datasets(model, n, seed)
    with torch.inference_mode():
        logits = model(clean.tokens)
    diffs = ld(model, clean, logits)
    discovered = discover(model, clean, corrupt, quiet, workers)
    evaluation_start = time.perf_counter()
    runs = node_runs(model, clean, corrupt, workers)
    evaluation = protocol.evaluate(runs, discovered["heads"], seed)
    known = {name: (heads, protocol.evaluate(runs, heads, seed)) for name, heads in known_circuits(model).items()}
    # forward passes of N prompts: the p_ABC means, then one run per distinct node set
    cost = {**discovered["cost"], "evaluation": {"forward_passes": (1 + len(runs.scores)) * n,
                                                 "seconds": time.perf_counter() - evaluation_start}}
    info = provenance(model, seed)
    results = {
        **info,
        **workers.describe(),
        "n_prompts": n,
        "protocol": asdict(protocol),
        "prepend_bos": protocol.prepend_bos,
        "mean_logit_diff": diffs.mean().item(),
        "io_prob": answer_probs(logits, clean.io_ids, clean.positions["END"]).mean().item(),
        "io_over_s": (diffs > 0).float().mean().item(),
        "corrupt_mean_logit_diff": ld(model, corrupt).mean().item(),
        "threshold": THRESHOLD,
        "heads": {name: [list(h) for h in members] for name, members in discovered["heads"].items()},
        "faithfulness": evaluation["faithfulness"],
        "completeness": evaluation["completeness"],
        "minimality": evaluation["minimality"],
        "evaluation": evaluation,
        "mechanism": discovered["mechanism"],
        "grids": {name: grid.tolist() for name, grid in discovered["grids"].items()},
        "forward_passes": sum(step["forward_passes"] for step in cost.values()),
        "example_attention": example_attention(model, clean, discovered["heads"]["name_mover"][:4]),
        "example_prompts": clean.prompts[:3],
        "dataset": dataset_json(clean, corrupt, NAME_LISTS[protocol.names]),
    }
    for name, (heads, evaluated) in known.items():
        results[f"{name}_circuit"] = {"heads": {c: [list(h) for h in members] for c, members in heads.items()},
                                      **{key: evaluated[key] for key in ("nodes", "circuit_logit_diff", "faithfulness",
                                                                         "faithfulness_gap", "completeness",
                                                                         "minimality")}}
    if info["model"] == "gpt2":
        results["paper_comparison"] = paper_comparison(discovered["heads"])
    if model.interp_source.circuit is not None:
        results["planted_comparison"] = paper_comparison(discovered["heads"], model.interp_source.circuit)
    out_dir = Path(out_dir)
    write_json(out_dir / "results.json", results)
    ioi_figures(read_json(out_dir / "results.json"), out_dir)  # exactly what `interp plot` regenerates
    circuit_heads = [h for members in discovered["heads"].values() for h in members]
    if circuit_heads:  # explorable attention of the circuit's heads on an example prompt
        save_view(attention_view(model, clean.prompts[0], circuit_heads, prepend_bos=protocol.prepend_bos),
                  out_dir / "ioi_attention.html", title=f"IOI circuit heads in {info['model']}")
    write_json(out_dir / "timing.json", {"total_seconds": time.perf_counter() - start, "steps": cost})
    return results


def add_arguments(parser) -> None:
    add_model(parser)
    parser.add_argument("--n", type=int, default=100, help="prompts (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="output directory (default results/ioi/<model>/)")
    parser.add_argument("--names", choices=sorted(NAME_LISTS), default="paper",
                        help="the paper's 99 names (default) or the 109 the organism was trained on")
    parser.add_argument("--order", choices=["mixed", "BABA", "ABBA"], default="mixed")
    parser.add_argument("--n-templates", type=int, default=None,
                        help="the paper's nb_templates: mixed takes half of them from each order (default 15)")
    parser.add_argument("--corruption", choices=["paper", "distinct"], default="paper",
                        help="p_ABC names as the paper's code draws them (default), or three distinct new names")
    parser.add_argument("--random-knockouts", type=int, default=10, help="completeness: random subsets (10)")
    parser.add_argument("--greedy-steps", type=int, default=5, help="completeness: greedy knock-out size (5)")
    parser.add_argument("--greedy-candidates", type=int, default=5,
                        help="completeness: nodes drawn and tried at each greedy step (5)")
    add_prepend_bos(parser, default=False)
    add_workers(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run_from_args(args) -> None:
    protocol = Protocol(names=args.names, order=args.order, n_templates=args.n_templates, corruption=args.corruption,
                        prepend_bos=args.prepend_bos, random_knockouts=args.random_knockouts,
                        greedy_steps=args.greedy_steps, greedy_candidates=args.greedy_candidates)
    model = load(args)
    with workers_for(args, model) as pool:
        results = run(model, args.out or default_out_dir("ioi", args.model), args.n, args.seed, args.quiet, protocol,
                      pool)
    print(f"mean logit diff {results['mean_logit_diff']:.3f}, IO over S {results['io_over_s']:.3f}, "
          f"faithfulness {results['faithfulness']:.3f}")
    for name, members in results["heads"].items():
        print(f"{name:>20}: {' '.join(f'{l}.{h}' for l, h in members) or '-'}")

if __name__ == "__main__":
    from interp.cli import main

    sys.exit(main(["ioi", *sys.argv[1:]]))
