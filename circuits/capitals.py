"""The capital-city FFN vector (Merullo, Eickhoff & Pavlick, NAACL 2024), on any GPT-2.

Method. A one-shot prompt ("Q: What is the capital of France?\\nA: Paris\\nQ: What is the capital of Poland?\\nA:")
is read with the logit lens at its last position, blocks counted from 0: first the argument (" Poland") leads,
then the answer (" Warsaw"). The block where the answer first leads, most often over the prompts the model
answers, is the task's emergence layer. There the MLP does the work:
1. switch test: subtracting that MLP's output from the block's output brings the argument back on top;
2. o-vector: that MLP's output at the last position of one prompt (or the authors' released vector, loaded from
   a .npy file) replaces the MLP outputs, at every position, of the block before it and every later one, on
   prompts with no task cue that end where the argument comes next ("table mug free China table mug free China
   table mug free"), and should promote each prompt's own answer (" Beijing"): mean reciprocal rank of the
   answer before and after, and how often it does not help at all;
3. ablation: with the MLPs of the last k blocks removed ("the top FFN layers"), recall from memory (abstractive
   prompts) collapses while copying from context (extractive prompts, the fact stated first) survives.
The same for the paper's "uppercasing" (BIG-bench's Reasoning about Colored Objects, generated in its format)
and past tense, each with its own emergence layer. Around it: the MLP neurons that write the answer read as
key-value memories, and word-vector analogies on the embedding matrix.

Every mean over prompts is reported with its per-prompt values (`per_prompt`, one entry per prompt of the task,
None where it was not measured) and a percentile bootstrap 95% interval (`<name>_ci`): the prompts resampled
within task (`interp.stats.Bootstrap`, seeded by the run's seed), each quantity recomputed on the resample's own
prompts; the emergence layer (a mode over prompts) is recomputed on each resample too.

The defaults follow the authors' released code: their 248-row world-capitals table, France -> Paris as every
capital prompt's demonstration, filler words drawn per prompt, the o-vector written at every position of blocks
(its block - 1)..last, no BOS token. Each is an option, recorded in results.json under "protocol".

Arguments and answers are tracked by their first token (how the authors score them). Everything is measured at
the last position. Run: `python circuits/capitals.py --model organism` (or `interp capitals`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from interp.ablation import check_components, mlps
from interp.circuits.capitals_lens import (
    Reading,
    emergence_layer,
    first_lead_blocks,
    lead_counts,
    measured,
    peak_blocks,
    read,
    trajectory,
)
from interp.circuits.capitals_memories import analogies, memories, text_sample
from interp.circuits.capitals_sureness import add_uncertainty
from interp.data import load_pairs
from interp.data.capitals import (
    CUE_FREE_REPEATS,
    FILLER_WORDS,
    FIXED_FILLER,
    KNOWN_TASKS,
    TASK_NAMES,
    Item,
    argument_answer_ids,
    demonstration_json,
    example_json,
    first_ids,
    first_token_collisions,
    task_items,
    task_table,
)
from interp.errors import InterpError
from interp.metrics import token_ranks
from interp.results import jsonable, provenance, write_json
from interp.stats import DEFAULT_RESAMPLES, Bootstrap, check_resamples, contains
from interp.tokens import prompt_ids
from interp.vectors import (
    LoadedVector,
    final_logits,
    lens_ranks,
    load_vector,
    mean_mlp_outputs,
    mlp_outputs_replaced,
    predictions_without_last_mlps,
    prompt_batches,
)
from interp.workers import Workers

# What the paper reports for GPT-2 medium: compared with our measurement, never used to make it.
PAPER_GPT2_MEDIUM = {
    "emergence_layer": 19,
    "o_vector_layer": {"capitals": 19, "colored_objects": 19, "past_tense": 18},
    "rank_before": {"capitals": 10, "past_tense": 7},  # 1 / mean reciprocal rank, roughly
    "rank_after": {"capitals": 4, "past_tense": 3},
    "no_effect_rate": {"capitals": 0.37, "colored_objects": 0.04, "past_tense": 0.19},
}


def too_long(model, items: Sequence[Item], prepend_bos: bool) -> str | None:
    """Why a task's prompts cannot run on the model (some are longer than its context), or None. The organism's
    context (64 tokens) is shorter than a one-shot colored-objects prompt (about 90 to 110)."""
    longest = max(
        len(prompt_ids(text, model.tokenizer, prepend_bos=prepend_bos))
        for item in items
        for text in (item.prompt, item.extractive, item.cue_free)
    )
    if longest > model.cfg.n_ctx:
        return f"its prompts are up to {longest} tokens; the model's context is {model.cfg.n_ctx}"
    return None


# --- The emergence block's MLP ---------------------------------------------------------------------------------


def switch_test(model, reading: Reading, layer: int) -> dict:
    """On the prompts where the answer leads right after block `layer`: subtract that block's MLP output from the
    block's output and read the lens again. How often is the argument back on top, how often is the answer
    gone? (Block output minus MLP output is the residual between the block's attention and its MLP.) Per prompt
    (`per_prompt`, None where the answer does not lead there): argument back on top, answer lost (1 or 0)."""
    check_components(model, mlps([layer]))
    leads = reading.answer_ranks[:, layer + 1] == 1
    on_top, lost = torch.full((2, len(reading.items)), float("nan"))
    if leads.any():
        subset = reading.subset(leads)
        without_mlp = subset.residuals[:, layer + 1] - subset.mlp_outputs[:, layer]
        ranks = lens_ranks(model, without_mlp, argument_answer_ids(subset.items))
        on_top[leads], lost[leads] = (ranks[:, 0] == 1).float(), (ranks[:, 1] > 1).float()
    return {
        "layer": layer,
        "n": int(leads.sum()),
        "rate": on_top[leads].mean().item() if leads.any() else None,
        "answer_lost_rate": lost[leads].mean().item() if leads.any() else None,
        "per_prompt": {"argument_on_top": reading.place(on_top), "answer_lost": reading.place(lost)},
    }


def transplant_blocks(layer: int, n_layers: int, start: Literal["layer-1", "layer"] = "layer-1") -> list[int]:
    """The blocks whose MLP outputs the o-vector of block `layer` replaces, up to the last: from the block before
    it ("layer-1", the authors' code: the vector of block 19 of GPT-2 medium written over blocks 18..23; a vector
    of block 0 from block 0 on), or from its own block ("layer")."""
    if start not in ("layer-1", "layer"):
        raise InterpError(f"the transplant starts at 'layer-1' or 'layer', not {start!r}")
    return list(range(max(layer - (start == "layer-1"), 0), n_layers))


def transplant(
    model,
    reading: Reading,
    layer: int,
    source: int = 0,
    positions: Literal["all"] | Sequence[int] = "all",
    start: Literal["layer-1", "layer"] = "layer-1",
    vector: LoadedVector | None = None,
) -> dict:
    """The o-vector: block `layer`'s MLP output at the last position of prompt `source`, or `vector` (loaded
    from a file, said to come from block `layer`; every prompt is then a target). Written over the MLP outputs of
    the `transplant_blocks` at `positions` of the other items' cue-free prompts ("all": each MLP becomes a
    constant function, as in the authors' code; or token indices, -1 the last), does it promote each one's own
    answer? Ranks of the answer in the model's output, before and after; per target prompt (`per_prompt`, None at
    the source) the reciprocal ranks and whether it had no effect (1 or 0)."""
    check_components(model, mlps([layer]))
    if vector is None:
        if not 0 <= source < len(reading.items):
            raise InterpError(f"source prompt {source} is out of range: there are {len(reading.items)} prompts")
        targets = reading.subset(torch.arange(len(reading.items)) != source)
        o_vector, origin, file = reading.mlp_outputs[source, layer], reading.items[source].argument, None
        if not targets.items:
            raise InterpError("the transplant needs at least two prompts: one lends its o-vector to the others")
    else:
        targets, o_vector, origin = reading, vector.vector, vector.path
        file = {"path": vector.path, "sha256": vector.sha256}
    prompts, answers = [item.cue_free for item in targets.items], first_ids([item.answer for item in targets.items])
    layers = transplant_blocks(layer, model.cfg.n_layers, start)
    before = token_ranks(final_logits(model, prompts, prepend_bos=reading.prepend_bos), answers)
    with mlp_outputs_replaced(model, o_vector, layers, positions):
        after = token_ranks(final_logits(model, prompts, prepend_bos=reading.prepend_bos), answers)
    mrr_before, mrr_after = (1 / before).mean(), (1 / after).mean()
    return {
        "layer": layer,
        "start": start,
        "layers": layers,
        "positions": positions if positions == "all" else list(positions),
        "source": origin,
        "o_vector_file": file,
        "n": len(prompts),
        "mrr_before": mrr_before,
        "mrr_after": mrr_after,
        "rank_before": 1 / mrr_before,
        "rank_after": 1 / mrr_after,  # the "rank" the paper quotes
        "no_effect_rate": (after >= before).float().mean(),
        "per_prompt": {
            "reciprocal_rank_before": targets.place(1 / before),
            "reciprocal_rank_after": targets.place(1 / after),
            "no_effect": targets.place(after >= before),
        },
    }


def correct_without_last_mlps(
    model,
    prompts: Sequence[str],
    answers: torch.Tensor,
    ks: Sequence[int],
    means: dict | None,
    prepend_bos: bool = True,
    workers: Workers | None = None,
) -> torch.Tensor:
    """[len(ks), n_prompts]: whether each prompt's top next token is the answer's first token with the MLPs of the
    last k blocks zeroed (or replaced by `means`), for each k: every k in one batched run per prompt length.
    `workers` share the batches out."""

    def correct_in(replica, batches: list[tuple[list[int], torch.Tensor]]) -> list[torch.Tensor]:
        return [
            predictions_without_last_mlps(replica, tokens, ks, means).cpu() == answers[indices]
            for indices, tokens in batches
        ]

    batches = list(prompt_batches(model, prompts, prepend_bos=prepend_bos))
    correct = torch.zeros(len(ks), len(prompts), dtype=torch.bool)
    for (indices, _), part in zip(batches, (workers or Workers(model)).map_items(correct_in, batches, "MLP ablations")):
        correct[:, indices] = part
    return correct


def ablation_curves(model, reading: Reading, ks: Sequence[int], workers: Workers | None = None) -> dict:
    """Accuracy on the reading's abstractive and extractive prompts with the MLPs of the last k blocks ablated (the
    paper's "top FFN layers"), by zero and by mean ablation (means over both prompt sets, see `mean_mlp_outputs`);
    per prompt (`per_prompt`), whether each is answered (1 or 0)."""
    n_layers = model.cfg.n_layers
    bad = [k for k in ks if not 0 <= k <= n_layers]
    if bad or not ks:
        raise InterpError(f"ablation sizes {list(bad or ks)} are invalid: give k in 0..{n_layers} (MLPs removed)")
    items = reading.items
    abstractive, extractive = [item.prompt for item in items], [item.extractive for item in items]
    answers = first_ids([item.answer for item in items])
    means = mean_mlp_outputs(model, abstractive + extractive, range(n_layers), prepend_bos=reading.prepend_bos)
    curves = {}
    for method, replacement in (("zero", None), ("mean", means)):
        correct = {
            name: correct_without_last_mlps(model, prompts, answers, ks, replacement, reading.prepend_bos, workers)
            for name, prompts in (("abstractive", abstractive), ("extractive", extractive))
        }
        curves[method] = {
            k: {
                "layers": list(range(n_layers - k, n_layers)),
                **{f"{name}_accuracy": rows[i].float().mean().item() for name, rows in correct.items()},
                "per_prompt": {name: reading.place(rows[i]) for name, rows in correct.items()},
            }
            for i, k in enumerate(ks)
        }
    return {"n": len(items), "removed": "the MLPs of the last k blocks", **curves}


def default_ks(n_layers: int) -> list[int]:
    return sorted({0, n_layers, *(k for k in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32) if k < n_layers)})


# --- The experiment --------------------------------------------------------------------------------------------


def compared(paper: float, ours: dict, key: str) -> dict:
    """The paper's value beside ours (`ours[key]`), with our interval and whether it holds the paper's value
    when there is one (`ours[key + "_ci"]`)."""
    row = {"paper": paper, "ours": ours[key]}
    interval = ours.get(f"{key}_ci")
    if interval is not None:
        row.update(ours_ci=interval, inside_interval=contains(interval, paper))
    return row


def paper_comparison(results: dict) -> dict:
    paper, transplants = PAPER_GPT2_MEDIUM, results["transplant"]
    return {
        "emergence_layer": compared(paper["emergence_layer"], results, "emergence_layer"),
        "o_vector_layer": {
            task: compared(layer, transplants[task], "layer")
            for task, layer in paper["o_vector_layer"].items()
            if task in transplants
        },
        **{
            key: {
                task: compared(value, transplants[task], key)
                for task, value in paper[key].items()
                if task in transplants
            }
            for key in ("rank_before", "rank_after", "no_effect_rate")
        },
    }


def lens_reading(model, items: Sequence[Item], prepend_bos: bool) -> tuple[Reading, dict]:
    """A task's prompts read with the logit lens: the reading the mechanism is measured on, and what results.json
    says of it (accuracy, emergence layer, trajectories, switch test, first-token collisions; per prompt, whether
    it is answered, both lens curves and, on the measured prompts, the block `emergence_layer` counts)."""
    reading = read(model, items, prepend_bos)
    subset, basis = measured(reading)
    layer = emergence_layer(subset.answer_ranks)
    return subset, {
        "first_token_collisions": first_token_collisions([(item.argument, item.answer) for item in items]),
        "n_prompts": len(reading.items),
        "n_answered": int(reading.answered.sum()),
        "accuracy": reading.answered.float().mean(),
        "measured_on": basis,
        "n_measured": len(subset.items),
        "examples": [example_json(item) for item in reading.items[:5]],
        "measured_arguments": [item.argument for item in subset.items],
        "emergence_layer": layer,
        "argument_first_leads": lead_counts(first_lead_blocks(subset.argument_ranks)),
        "answer_first_leads": lead_counts(first_lead_blocks(subset.answer_ranks)),
        "trajectory": trajectory(subset),
        "switch_test": switch_test(model, subset, layer),
        "per_prompt": {
            "answered": reading.place(reading.answered),
            "argument_ranks": reading.argument_ranks.tolist(),
            "answer_ranks": reading.answer_ranks.tolist(),
            "answer_peak_block": subset.place(peak_blocks(subset.answer_ranks)),
        },
    }


@dataclass(frozen=True)
class Protocol:
    """The experiment's choices; the defaults follow the authors' released code. Recorded in results.json."""

    tasks: Sequence[str] = TASK_NAMES  # must include capitals; "uppercase" is interp's word-uppercasing table
    capitals_table: str = "world_capitals"  # the authors' 248 rows; "capitals": interp's 107 (the organism's)
    demonstration: Literal["paper", "random"] = "paper"  # see `table_questions`, `colored_object_questions`
    filler: Literal["random", "fixed"] = "random"  # see `fillers`
    cue_free_repeats: int = CUE_FREE_REPEATS
    transplant_positions: Literal["all"] | Sequence[int] = "all"
    transplant_start: Literal["layer-1", "layer"] = "layer-1"  # see `transplant_blocks`
    o_vector: str | None = None  # a .npy file: the capitals task's o-vector, instead of measuring it
    o_vector_layer: int | None = None  # the block of the capitals o-vector (default: the capitals emergence layer)

    def check(self, model) -> LoadedVector | None:
        """Every choice checked before any work (one-line errors); the loaded o-vector, if any."""
        unknown = [task for task in self.tasks if task not in KNOWN_TASKS]
        if unknown:
            raise InterpError(f"unknown tasks {unknown}; known: {', '.join(KNOWN_TASKS)}")
        if "capitals" not in self.tasks:
            raise InterpError(
                "the tasks must include 'capitals': the emergence layer and the ablation are measured on it"
            )
        load_pairs(self.capitals_table)
        transplant_blocks(0, model.cfg.n_layers, self.transplant_start)
        if self.o_vector_layer is not None:
            check_components(model, mlps([self.o_vector_layer]))
        return None if self.o_vector is None else load_vector(self.o_vector, model.cfg.d_model)

    def json(self, loaded: LoadedVector | None) -> dict:
        return {
            **asdict(self),
            "filler_words": FILLER_WORDS if self.filler == "random" else FIXED_FILLER,
            "o_vector_sha256": loaded.sha256 if loaded else None,
        }


def run(
    model,
    out_dir: str | Path,
    seed: int = 0,
    quiet: bool = False,
    n_prompts: int | None = None,
    ablation_ks: Sequence[int] | None = None,
    n_texts: int = 200,
    prepend_bos: bool = False,
    workers: Workers | None = None,
    bootstrap: int = DEFAULT_RESAMPLES,
    **choices,
) -> dict:
    """The whole experiment; writes results.json, timing.json and the figures into out_dir, returns the results.

    n_prompts (per task; default all pairs of each table, `N_COLORED_OBJECTS` scenes), ablation_ks (default: a
    spread from 0 to all layers) and n_texts (the sample for the memories) trade detail for time. Every prompt
    starts with BOS when `prepend_bos` (not in the authors' code). `workers` share the ablation curves' prompt
    batches out. `bootstrap` resamples of the prompts, within task and seeded by `seed`, give every mean its 95%
    interval (0: none; see `add_uncertainty`). `choices` are the fields of `Protocol`."""
    workers = workers or Workers(model)
    protocol = Protocol(**choices)
    loaded = protocol.check(model)
    n_resamples = check_resamples(bootstrap)
    if n_texts < 1:
        raise InterpError(f"the key-value memories need a text sample of at least 1 text, not {n_texts}")
    say = (lambda message: None) if quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    seconds_since_start, start = {}, time.time()
    results = {
        **provenance(model, seed),
        **workers.describe(),
        "n_layers": model.cfg.n_layers,
        "prepend_bos": prepend_bos,
        "protocol": protocol.json(loaded),
        "tasks": {},
        "transplant": {},
        "skipped_tasks": {},
    }
    readings = {}
    for task in protocol.tasks:
        table = task_table(task, protocol.capitals_table)
        items = task_items(
            task,
            n_prompts,
            seed,
            capitals_table=protocol.capitals_table,
            demonstration=protocol.demonstration,
            filler=protocol.filler,
            cue_free_repeats=protocol.cue_free_repeats,
        )
        reason = too_long(model, items, prepend_bos)
        if reason and task != "capitals":  # capitals cannot be skipped: `read` says why it cannot run
            say(f"[capitals] {task} skipped: {reason}")
            results["skipped_tasks"][task] = reason
            continue
        say(f"[capitals] {task}: logit lens, switch test, o-vector transplant")
        readings[task], measurement = lens_reading(model, items, prepend_bos)
        results["tasks"][task] = {
            "table": table or "generated",
            "demonstration": demonstration_json(task, protocol.demonstration),
            **measurement,
        }
        layer = results["tasks"][task]["emergence_layer"]
        chosen = task == "capitals" and protocol.o_vector_layer is not None
        results["transplant"][task] = transplant(
            model,
            readings[task],
            protocol.o_vector_layer if chosen else layer,
            positions=protocol.transplant_positions,
            start=protocol.transplant_start,
            vector=loaded if task == "capitals" else None,
        )
        seconds_since_start[task] = time.time() - start
    capitals = results["tasks"]["capitals"]
    results["emergence_layer"], results["switch_test"] = capitals["emergence_layer"], capitals["switch_test"]

    say("[capitals] ablation curves")
    ks = default_ks(model.cfg.n_layers) if ablation_ks is None else list(ablation_ks)
    results["ablation"] = {
        "measured_on": capitals["measured_on"],
        **ablation_curves(model, readings["capitals"], ks, workers),
    }
    seconds_since_start["ablation"] = time.time() - start
    groups = [task for task, entry in results["tasks"].items() for _ in range(entry["n_prompts"])]
    add_uncertainty(results, Bootstrap.over(groups, n_resamples, seed))
    seconds_since_start["bootstrap"] = time.time() - start

    say("[capitals] key-value memories, word-vector analogies")
    texts = text_sample(model, n_texts, seed)
    results["memories"] = memories(
        model, readings["capitals"].items[0], results["emergence_layer"], texts, prepend_bos=prepend_bos
    )
    results["analogies"] = analogies(model)
    if model.interp_source.spec == "gpt2-medium":
        results["paper_comparison"] = paper_comparison(results)
    seconds_since_start["total"] = time.time() - start

    results = jsonable(results)
    write_json(Path(out_dir) / "results.json", results)
    write_json(Path(out_dir) / "timing.json", {"seconds_since_start": seconds_since_start})
    figures_from_results(results, out_dir)
    return results


def figures_from_results(data: dict, out_dir: str | Path) -> list[Path]:
    """Every figure of the experiment, from its results.json data alone."""
    from interp.plotting import plot_ablation_curves, plot_lens_trajectories, plot_transplant, save_figure

    return [
        *save_figure(plot_lens_trajectories(data["tasks"], data["model"]), out_dir, "lens_trajectories"),
        *save_figure(plot_transplant(data["transplant"], data["model"]), out_dir, "transplant"),
        *save_figure(plot_ablation_curves(data["ablation"], data["model"]), out_dir, "ablation"),
    ]


def main(argv: list[str] | None = None) -> int:
    """`python circuits/capitals.py ...` is `interp capitals ...`: same arguments, same one-line errors."""
    from interp.cli import main as interp_main

    return interp_main(["capitals", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
