r"""Indirect object identification (Wang et al. 2023): find the circuit by measurement, then evaluate it.

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

import numpy as np
import torch
from tqdm import tqdm

from interp.ablation import ablated, heads, mean_activations
from interp.cache import run_with_selective_cache
from interp.circuit import NodeRuns
from interp.circuits.ioi_evaluation import (
    evaluate_circuit,
    evaluation_nodes,
    known_circuits,
    node_runs,
    paper_comparison,
    paper_numbers,
    random_circuits,
    template_holdout,
)
from interp.circuits.ioi_selection import RULES, STEPS, THRESHOLD, Evidence, classes_of, selection_stability
from interp.data.ioi import Corruption, IOIDataset, TemplateOrder, dataset_json, ioi_datasets, ioi_task
from interp.data.ioi_words import ORGANISM_NAMES, PAPER_NAMES
from interp.errors import InterpError
from interp.lens import head_logit_contributions, lens_logits
from interp.metrics import answer_probs, logit_diffs
from interp.patching import logit_diff_metric, path_patch
from interp.results import provenance, read_json, write_json
from interp.stats import DEFAULT_RESAMPLES, Bootstrap, rounded
from interp.tokens import str_tokens
from interp.views import attention_view, save_view
from interp.workers import Workers, fill_in


def ld(model, data: IOIDataset, logits=None) -> torch.Tensor:
    """Per-prompt logit difference IO - S at END."""
    if logits is None:
        with torch.inference_mode():
            logits = model(data.tokens)
    return logit_diffs(logits, data.io_ids, data.s_ids, data.positions["END"])


# The paper's headline numbers (GPT-2 small, 100k prompts; faithfulness: F(C) / F(M) of its 26-head circuit).
PAPER_NUMBERS = {"mean_logit_diff": 3.56, "io_over_s": 0.993, "io_prob": 0.49, "faithfulness": 0.87}


def behaviour(model, data: IOIDataset, bootstrap: Bootstrap | None, logits=None) -> dict:
    """The task's behaviour on p_IOI: per-prompt logit difference, IO probability and IO over S, their means and,
    with a bootstrap over the prompts, the means' 95% intervals (`<name>_ci`)."""
    if logits is None:
        with torch.inference_mode():
            logits = model(data.tokens)
    diffs = ld(model, data, logits)
    per_prompt = {
        "logit_diff": diffs,
        "io_prob": answer_probs(logits, data.io_ids, data.positions["END"]),
        "io_over_s": (diffs > 0).float(),
    }
    summary = {}
    for name, key in (("mean_logit_diff", "logit_diff"), ("io_prob", "io_prob"), ("io_over_s", "io_over_s")):
        summary[name] = per_prompt[key].mean().item()
        if bootstrap is not None:
            summary[f"{name}_ci"] = rounded(bootstrap.mean_interval(per_prompt[key].cpu().numpy()))
    return {**summary, "per_prompt": {key: rounded(values.cpu().numpy()) for key, values in per_prompt.items()}}


def attention_per_prompt(model, data: IOIDataset, from_key: str, to_keys: list[str]) -> torch.Tensor:
    """[layer, head, len(to_keys), prompt]: attention from position `from_key` to each of `to_keys`."""
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    _, cache = run_with_selective_cache(model, data.tokens, names)
    rows = torch.arange(len(data))
    query = data.positions[from_key]
    return torch.stack(
        [
            torch.stack([cache[name][rows, :, query, data.positions[key]].T for key in to_keys], 1).float().cpu()
            for name in names
        ]
    )


def attention(model, data: IOIDataset, from_key: str, to_keys: list[str]) -> torch.Tensor:
    """[layer, head, len(to_keys)]: mean attention from position `from_key` to each of `to_keys`."""
    return attention_per_prompt(model, data, from_key, to_keys).mean(-1)


def direct_logit_attribution(model, data: IOIDataset, per_prompt: bool = False, **ablation) -> torch.Tensor:
    """[layer, head]: each head's mean direct contribution to logit(IO) - logit(S) at END, through the final
    LayerNorm's scale of the whole residual (optionally with components ablated); [layer, head, prompt] per
    prompt."""
    with ablated(model, **ablation) if ablation else nullcontext():
        contributions = head_logit_contributions(
            model, data.tokens, data.positions["END"], torch.stack([data.io_ids, data.s_ids], -1)
        )
    diffs = (contributions[..., 0] - contributions[..., 1]).permute(1, 2, 0)
    return diffs if per_prompt else diffs.mean(-1)


def copying(model, data: IOIDataset, head_list) -> torch.Tensor:
    """[len(head_list), 2, prompt]: whether each head's OV circuit, applied to the residual at the IO name after
    block 0, puts that name among the top 5 tokens (copying it) and among the bottom 5 (writing against it): the
    paper's copy score and negative copy score, per prompt."""
    _, cache = run_with_selective_cache(model, data.tokens, ["blocks.1.hook_resid_pre"])
    rows = torch.arange(len(data))
    resid = cache["blocks.1.hook_resid_pre"][rows, data.positions["IO"]]  # [batch, d_model]
    io = data.io_ids[:, None].to(resid.device)
    scores = torch.zeros(len(head_list), 2, len(data))
    with torch.inference_mode():
        for i, (layer, head) in enumerate(head_list):
            normed = model.blocks[layer].ln1(resid) if hasattr(model.blocks[layer], "ln1") else resid
            logits = lens_logits(model, normed @ model.W_V[layer, head] @ model.W_O[layer, head])
            for side, sign in enumerate((1, -1)):
                scores[i, side] = ((sign * logits).topk(5, dim=-1).indices == io).any(-1).float().cpu()
    return scores


def discover(
    model,
    clean: IOIDataset,
    corrupt: IOIDataset,
    quiet: bool = False,
    workers: Workers | None = None,
    rule: str = "threshold",
) -> dict:
    """The paper's discovery steps; returns classes, every measured grid, the per-prompt `evidence` they come
    from, mechanism checks and costs. `workers` share each path-patching step's senders out (default: all in this
    process). `rule`: "threshold" (effects and attention) or "mechanism" (also each class's mechanism, for which
    every head's copy scores are measured: `interp.circuits.ioi_selection.mechanism`)."""
    if rule not in RULES:
        raise InterpError(f"unknown class rule {rule!r}; use {' or '.join(RULES)}")
    metric = logit_diff_metric(clean.io_ids, clean.s_ids, clean.positions["END"], per_prompt=True)
    all_senders = [(layer, head) for layer in range(model.cfg.n_layers) for head in range(model.cfg.n_heads)]
    everyone = np.full((1, len(clean)), 1 / len(clean))
    shape = (model.cfg.n_layers, model.cfg.n_heads, 2, len(clean))
    evidence = Evidence(
        ld(model, clean).cpu().numpy(),
        {},
        attention_per_prompt(model, clean, "END", ["IO", "S1", "S2"]).numpy(),
        attention_per_prompt(model, clean, "S2", ["S1", "S1+1"]).numpy(),
        copying=copying(model, clean, all_senders).reshape(shape).numpy() if rule == "mechanism" else None,
    )
    cost = {}
    steps = tqdm(total=5, desc="IOI discovery", disable=quiet)

    def found() -> dict[str, list[tuple[int, int]]]:
        return classes_of(evidence.effects(everyone))

    def step(name: str, receivers) -> None:
        start = time.perf_counter()

        def from_senders(replica, senders: list[tuple[int, int]]) -> torch.Tensor:
            return path_patch(replica, clean.tokens, corrupt.tokens, metric, receivers, senders)

        shares = (workers or Workers(model)).map(from_senders, all_senders, f"path patching ({name})")
        evidence.patched[name] = fill_in(shares).cpu().numpy()
        # forward passes of N prompts: the clean and corrupt runs, then one patched run per sender
        cost[name] = {"forward_passes": (2 + len(all_senders)) * len(clean), "seconds": time.perf_counter() - start}

    step("direct_effect", "resid_final")
    steps.update()
    for name, receiver_class, receiver_input in (
        ("into_name_mover_queries", "name_mover", "q"),
        ("into_s_inhibition_values", "s_inhibition", "v"),
        ("into_induction_keys", "induction", "k"),
    ):
        if found()[receiver_class]:
            step(name, [(l, h, receiver_input) for l, h in found()[receiver_class]])
        steps.update()

    name_movers = found()["name_mover"]
    if name_movers:
        # Backup name movers: knock the name movers out (mean over p_ABC); whose direct effect rises?
        start = time.perf_counter()
        means = mean_activations(model, corrupt.tokens, heads(name_movers), groups=corrupt.template_ids)
        evidence.dla_before = direct_logit_attribution(model, clean, per_prompt=True).numpy()
        evidence.dla_after = direct_logit_attribution(
            model,
            clean,
            per_prompt=True,
            components=heads(name_movers),
            method="mean",
            means=means,
            groups=clean.template_ids,
        ).numpy()
        cost["backup"] = {"forward_passes": 3 * len(clean), "seconds": time.perf_counter() - start}
    steps.update()
    steps.close()
    classes, effects = found(), evidence.effects(everyone)
    grids = {name: torch.as_tensor(effects[name][..., 0]) for name in (*STEPS, "backup_rise") if name in effects}
    return {
        "heads": classes,
        "grids": grids,
        "evidence": evidence,
        "mechanism": mechanism_checks(model, clean, classes, effects),
        "cost": cost,
    }


def mechanism_checks(model, clean: IOIDataset, found: dict[str, list], effects: dict[str, np.ndarray]) -> dict:
    """The paper's checks of each class's mechanism: where its heads look, and the name movers' copy scores."""
    at_end, looks = effects["attention_end"][..., 0], effects["attention_s2"][..., 0]
    # the fraction of prompts where each name mover copies IO, each negative one writes against it: one run
    movers = found["name_mover"] + found["negative_name_mover"]
    copies = copying(model, clean, movers).mean(-1)
    copy_scores = {
        key: {f"{l}.{h}": copies[i, side].item() for i, (l, h) in enumerate(movers) if (l, h) in heads}
        for key, side, heads in (
            ("name_mover_copy_score", 0, found["name_mover"]),
            ("negative_name_mover_copy_score", 1, found["negative_name_mover"]),
        )
    }
    mechanism = {
        "name_mover_attention": {
            f"{l}.{h}": {"to_IO": float(at_end[l, h, 0]), "to_S": float(at_end[l, h, 1] + at_end[l, h, 2])}
            for l, h in found["name_mover"] + found["backup_name_mover"]
        },
        **copy_scores,
        "s_inhibition_attention_to_S2": {f"{l}.{h}": float(at_end[l, h, 2]) for l, h in found["s_inhibition"]},
        "attention_from_S2": {
            f"{l}.{h}": {"to_S1": float(looks[l, h, 0]), "to_S1+1": float(looks[l, h, 1])}
            for l, h in found["induction"] + found["duplicate_token"]
        },
    }
    if found["previous_token"]:
        prev = attention(model, clean, "S1+1", ["S1"])
        mechanism["previous_token_attention_to_S1"] = {
            f"{l}.{h}": prev[l, h, 0].item() for l, h in found["previous_token"]
        }
    return mechanism


def example_attention(model, data: IOIDataset, head_list) -> dict:
    """The attention patterns of `head_list` on the first prompt (unpadded), for the results file's figure."""
    length = int(data.positions["END"][0]) + 1
    layers = sorted({layer for layer, _ in head_list})
    _, cache = run_with_selective_cache(
        model, data.tokens[:1, :length], [f"blocks.{layer}.attn.hook_pattern" for layer in layers]
    )
    return {
        "tokens": str_tokens(data.tokens[0, :length], model.tokenizer),
        "heads": {f"{l}.{h}": cache[f"blocks.{l}.attn.hook_pattern"][0, h].tolist() for l, h in head_list},
    }


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
    bootstrap: int = DEFAULT_RESAMPLES  # resamples of the prompts, within template (0: no intervals)
    random_circuits: int = 100  # random circuits of the found one's size, for its faithfulness' p-value (0: off)
    template_holdout: bool = True  # classes found on half of the templates, evaluated on the other half
    class_rule: str = "threshold"  # or "mechanism": each class's mechanism checked too (ioi_selection.RULES)

    def datasets(self, model, n: int, seed: int) -> tuple[IOIDataset, IOIDataset]:
        if self.names not in NAME_LISTS:
            raise InterpError(f"unknown name list {self.names!r}; use {' or '.join(NAME_LISTS)}")
        return ioi_datasets(
            n,
            seed=seed,
            order=self.order,
            names=NAME_LISTS[self.names],
            tokenizer=model.tokenizer,
            prepend_bos=self.prepend_bos,
            n_templates=self.n_templates,
            corruption=self.corruption,
        )

    def evaluate(self, runs: NodeRuns, classes: dict, seed: int) -> dict:
        return evaluate_circuit(runs, classes, self.random_knockouts, self.greedy_steps, self.greedy_candidates, seed)


def run(
    model,
    out_dir: str | Path,
    n: int = 100,
    seed: int = 0,
    quiet: bool = False,
    protocol: Protocol = Protocol(),
    workers: Workers | None = None,
) -> dict:
    """The whole reproduction: dataset, discovery, evaluation (and the `known_circuits` evaluated the same way),
    each with how sure it is; writes results.json (with the exact dataset and every per-prompt value, so that every
    number can be recomputed from the file) and the figures. `workers` share the path-patching senders and the
    evaluation's node sets out."""
    workers = workers or Workers(model)
    from interp.plotting_ioi import ioi_figures

    torch.manual_seed(seed)
    start = time.perf_counter()
    clean, corrupt = protocol.datasets(model, n, seed)
    bootstrap = Bootstrap.over(clean.template_ids.tolist(), protocol.bootstrap, seed)
    observed = behaviour(model, clean, bootstrap)
    discovered = discover(model, clean, corrupt, quiet, workers, protocol.class_rule)
    cost = dict(discovered["cost"])
    evaluation_start = time.perf_counter()
    runs = node_runs(model, clean, corrupt, workers, bootstrap)
    evaluation = protocol.evaluate(runs, discovered["heads"], seed)
    known = {name: (members, protocol.evaluate(runs, members, seed)) for name, members in known_circuits(model).items()}
    # forward passes of N prompts: the p_ABC means, then one run per distinct node set
    cost["evaluation"] = {
        "forward_passes": (1 + len(runs.scores)) * n,
        "seconds": time.perf_counter() - evaluation_start,
    }
    sureness = {}
    if bootstrap is not None:
        sureness["selection"] = timed(
            cost,
            "selection_stability",
            0,
            lambda: selection_stability(discovered["evidence"], bootstrap, discovered["heads"]),
        )
    circuit = evaluation_nodes(discovered["heads"])
    if protocol.template_holdout and circuit:
        sureness["template_holdout"] = timed(
            cost,
            "template_holdout",
            n * 2,
            lambda: template_holdout(
                runs, discovered["evidence"], clean.template_ids.tolist(), discovered["heads"], seed
            ),
        )
    if protocol.random_circuits and circuit:
        sureness["random_circuits"] = timed(
            cost,
            "random_circuits",
            n * protocol.random_circuits,
            lambda: random_circuits(runs, circuit, protocol.random_circuits, seed),
        )
    info = provenance(model, seed)
    results = {
        **info,
        **workers.describe(),
        "n_prompts": n,
        "protocol": asdict(protocol),
        "prepend_bos": protocol.prepend_bos,
        "bootstrap": None if bootstrap is None else bootstrap.describe(),
        **{key: value for key, value in observed.items() if key != "per_prompt"},
        "corrupt_mean_logit_diff": ld(model, corrupt).mean().item(),
        "threshold": THRESHOLD,
        "heads": {name: [list(h) for h in members] for name, members in discovered["heads"].items()},
        **sureness,
        "faithfulness": evaluation["faithfulness"],
        "completeness": evaluation["completeness"],
        "minimality": evaluation["minimality"],
        "evaluation": evaluation,
        "mechanism": discovered["mechanism"],
        "grids": {name: grid.tolist() for name, grid in discovered["grids"].items()},
        "per_prompt": {**observed["per_prompt"], **discovered["evidence"].to_json()},
        "forward_passes": sum(step["forward_passes"] for step in cost.values()),
        "example_attention": example_attention(model, clean, discovered["heads"]["name_mover"][:4]),
        "example_prompts": clean.prompts[:3],
        "dataset": dataset_json(clean, corrupt, NAME_LISTS[protocol.names]),
    }
    for name, (known_heads, evaluated) in known.items():
        results[f"{name}_circuit"] = {
            "heads": {c: [list(h) for h in members] for c, members in known_heads.items()},
            **{key: value for key, value in evaluated.items() if key != "minimality_sets"},
        }
    if info["model"] == "gpt2":
        results["paper_comparison"] = paper_comparison(discovered["heads"])
        results["paper_numbers"] = paper_numbers(
            {
                **{
                    key: (observed[key], observed.get(f"{key}_ci"))
                    for key in ("mean_logit_diff", "io_over_s", "io_prob")
                },
                "faithfulness": (
                    results["paper_circuit"]["faithfulness"],
                    results["paper_circuit"].get("faithfulness_ci"),
                ),
            },
            PAPER_NUMBERS,
        )
    if model.interp_source.circuit is not None:
        results["planted_comparison"] = paper_comparison(discovered["heads"], model.interp_source.circuit)
    out_dir = Path(out_dir)
    write_json(out_dir / "results.json", results)
    ioi_task(clean, corrupt).save(out_dir / "task.json")  # the exact pairs, for `--task` of any command
    ioi_figures(read_json(out_dir / "results.json"), out_dir)  # exactly what `interp plot` regenerates
    circuit_heads = [h for members in discovered["heads"].values() for h in members]
    if circuit_heads:  # explorable attention of the circuit's heads on an example prompt
        save_view(
            attention_view(model, clean.prompts[0], circuit_heads, prepend_bos=protocol.prepend_bos),
            out_dir / "ioi_attention.html",
            title=f"IOI circuit heads in {info['model']}",
        )
    write_json(out_dir / "timing.json", {"total_seconds": time.perf_counter() - start, "steps": cost})
    return results


def timed(cost: dict, name: str, forward_passes: int, compute):
    """compute(), its wall time and forward passes (of N prompts) recorded under cost[name]."""
    start = time.perf_counter()
    result = compute()
    cost[name] = {"forward_passes": forward_passes, "seconds": time.perf_counter() - start}
    return result


if __name__ == "__main__":
    from interp.cli import main

    sys.exit(main(["ioi", *sys.argv[1:]]))
