"""How sure the capital-city experiment's numbers are: bootstrap intervals over prompts, resampled within task, for
every mean that `circuits/capitals.py` reports, from its per-prompt values (`interp.stats.Bootstrap`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from interp.stats import Bootstrap, rounded


@dataclass(frozen=True)
class TaskResamples:
    """The run's bootstrap (stratified by task) seen from one task's prompts: columns start..start + n of it.

    A quantity measured on some of them (the answered prompts; those where the answer leads at the switch test's
    block) is resampled with them: in each resample it is recomputed on the prompts of its own that the resample
    drew, which also carries how many of them there are. A resample that draws none leaves that quantity out."""

    bootstrap: Bootstrap
    start: int
    n: int

    @property
    def counts(self) -> np.ndarray:  # [n_resamples, n]: how often each of the task's prompts is drawn
        return self.bootstrap.counts[:, self.start : self.start + self.n]

    def means(self, series) -> np.ndarray:
        """A per-prompt series (None where not measured) -> its mean in each resample (NaN where none is drawn)."""
        values = np.asarray(series, dtype=np.float64)
        measured = ~np.isnan(values)
        with np.errstate(invalid="ignore"):
            return (self.counts @ np.where(measured, values, 0.0)) / (self.counts @ measured)

    def modes(self, series, n_blocks: int) -> np.ndarray:
        """Per-prompt blocks (None where not measured) -> the most frequent in each resample, the earliest on ties
        (`emergence_layer`'s rule; counted in integers, so ties stay ties), NaN where none is drawn."""
        tally = self.counts @ (np.asarray(series, dtype=np.float64)[:, None] == np.arange(n_blocks))
        return np.where(tally.sum(1) > 0, tally.argmax(1), np.nan)

    def interval(self, samples) -> list[float] | None:
        """The percentile interval over the resamples where the statistic is defined (None: in none)."""
        samples = np.asarray(samples, dtype=np.float64)
        drawn = samples[~np.isnan(samples)]
        return rounded(self.bootstrap.interval(drawn)) if drawn.size else None


def add_intervals(summary: dict, resamples: TaskResamples, means: dict[str, str], of_mean=lambda mean: mean) -> None:
    """`<name>_ci` beside each reported `name` of `summary`: the interval of `of_mean` of the mean of its
    per-prompt series (`means[name]`, a key of `summary["per_prompt"]`, kept last)."""
    for name, series in means.items():
        summary[f"{name}_ci"] = resamples.interval(of_mean(resamples.means(summary["per_prompt"][series])))
    summary["per_prompt"] = summary.pop("per_prompt")


def add_uncertainty(results: dict, bootstrap: Bootstrap | None) -> None:
    """Every mean over prompts of the results gets its bootstrap interval (`<name>_ci`), the emergence layer its
    interval and its distribution over the resamples (`emergence_layer_bootstrap`: block -> share), from one set
    of resamples of every task's prompts, in the order of `results["tasks"]`; nothing with no bootstrap."""
    results["bootstrap"] = None if bootstrap is None else bootstrap.describe()
    if bootstrap is None:
        return
    start = 0
    for task, entry in results["tasks"].items():
        resamples = TaskResamples(bootstrap, start, entry["n_prompts"])
        start += entry["n_prompts"]
        blocks = resamples.modes(entry["per_prompt"]["answer_peak_block"], results["n_layers"])
        entry["emergence_layer_ci"] = resamples.interval(blocks)
        drawn, times = np.unique(blocks[~np.isnan(blocks)], return_counts=True)
        entry["emergence_layer_bootstrap"] = {str(int(b)): t / times.sum() for b, t in zip(drawn, times)}
        add_intervals(entry, resamples, {"accuracy": "answered"})
        add_intervals(entry["switch_test"], resamples, {"rate": "argument_on_top", "answer_lost_rate": "answer_lost"})
        transplanted = results["transplant"][task]
        if task != "capitals" or results["protocol"]["o_vector_layer"] is None:  # the block is the measured one
            transplanted["layer_ci"] = entry["emergence_layer_ci"]
        add_intervals(
            transplanted,
            resamples,
            {
                "mrr_before": "reciprocal_rank_before",
                "mrr_after": "reciprocal_rank_after",
                "no_effect_rate": "no_effect",
            },
        )
        add_intervals(
            transplanted,
            resamples,
            {"rank_before": "reciprocal_rank_before", "rank_after": "reciprocal_rank_after"},
            np.reciprocal,
        )
        if task == "capitals":
            for method in ("zero", "mean"):
                for curve in results["ablation"][method].values():
                    add_intervals(
                        curve, resamples, {"abstractive_accuracy": "abstractive", "extractive_accuracy": "extractive"}
                    )
    results["emergence_layer_ci"] = results["tasks"]["capitals"]["emergence_layer_ci"]
