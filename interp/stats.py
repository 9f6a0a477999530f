"""How sure a finding is: percentile bootstrap intervals over prompts, resampled within groups.

Every measurement keeps one value per prompt; the numbers users see are means over prompts. A bootstrap resample
is a reweighting of the prompts (how often each was drawn, over the number of prompts), so every resampled mean is
one matrix product of the per-prompt values with the resamples' weights: nothing is re-run, and one set of
resamples serves every quantity of a run, which keeps their joint variation (a ratio of two means, a selection
rule applied to a whole grid) exact. Resampling is stratified: each group (an IOI template, a capitals task) keeps
its own number of prompts in every resample, as the experiment's design fixes them.

Intervals are percentile intervals (scipy.stats.bootstrap's `method="percentile"`): the 2.5th and 97.5th
percentiles of the statistic over the resamples, numpy's linear interpolation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from interp.errors import InterpError

DEFAULT_RESAMPLES = 1000
LEVEL = 0.95


def check_resamples(n_resamples) -> int:
    """`--bootstrap N`: a whole number >= 0 (0 turns intervals off)."""
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 0:
        raise InterpError(f"--bootstrap takes a whole number of resamples >= 0 (0 turns it off), not {n_resamples!r}")
    return int(n_resamples)


def resample_counts(groups: Sequence, n_resamples: int, seed: int) -> np.ndarray:
    """[n_resamples, n_prompts]: how many times each prompt is drawn in each resample; within each group (in order
    of first appearance) as many draws, with replacement, as the group has prompts."""
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_resamples, len(groups)), dtype=np.int64)
    rows = np.arange(n_resamples)[:, None]
    for group in dict.fromkeys(groups.tolist()):
        members = np.flatnonzero(groups == group)
        drawn = members[rng.integers(0, len(members), size=(n_resamples, len(members)))]
        np.add.at(counts, (np.broadcast_to(rows, drawn.shape), drawn), 1)
    return counts


def means_under(values, weights) -> np.ndarray:
    """values [..., n_prompts], weights [n_weightings, n_prompts] (each row sums to 1) -> [..., n_weightings]."""
    values, weights = np.asarray(values, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    if values.shape[-1] != weights.shape[-1]:
        raise InterpError(f"per-prompt values of {values.shape[-1]} prompts for weights over {weights.shape[-1]}")
    return values @ weights.T


@dataclass(frozen=True)
class Bootstrap:
    """One set of seeded resamples of a run's prompts, shared by every quantity measured on them."""

    counts: np.ndarray  # [n_resamples, n_prompts]
    groups: np.ndarray  # [n_prompts]
    seed: int
    level: float = LEVEL

    @classmethod
    def over(cls, groups: Sequence, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Bootstrap | None:
        """Resamples of prompts in `groups` (one id per prompt; all equal for an unstratified bootstrap); None when
        n_resamples is 0 (intervals off)."""
        n_resamples = check_resamples(n_resamples)
        if n_resamples == 0:
            return None
        groups = np.asarray(groups)
        if groups.ndim != 1 or len(groups) == 0:
            raise InterpError("the bootstrap needs one group id per prompt, and at least one prompt")
        return cls(resample_counts(groups, n_resamples, seed), groups, seed)

    @property
    def n_resamples(self) -> int:
        return self.counts.shape[0]

    @property
    def n_prompts(self) -> int:
        return self.counts.shape[1]

    def means(self, values) -> np.ndarray:
        """values [..., n_prompts] -> resampled means [..., n_resamples]."""
        return means_under(values, self.counts / self.n_prompts)

    def interval(self, samples) -> np.ndarray:
        """samples [..., n_resamples] of a statistic -> its percentile interval [..., 2] (low, high)."""
        tail = 100 * (1 - self.level) / 2
        return np.moveaxis(np.percentile(np.asarray(samples, dtype=np.float64), [tail, 100 - tail], axis=-1), 0, -1)

    def mean_interval(self, values) -> np.ndarray:
        """The interval of the mean of per-prompt values [..., n_prompts] -> [..., 2]."""
        return self.interval(self.means(values))

    def statistic_interval(self, statistic: Callable[..., np.ndarray], *values) -> np.ndarray:
        """The interval of `statistic(mean_a, mean_b, ...)`, a function of several per-prompt series' means
        (each [..., n_prompts]) evaluated on every resample at once (their last axis is the resample)."""
        return self.interval(statistic(*(self.means(v) for v in values)))

    def fraction(self, selected) -> np.ndarray:
        """selected [..., n_resamples] booleans -> the fraction of resamples in which each is selected."""
        return np.asarray(selected, dtype=np.float64).mean(-1)

    def describe(self) -> dict:
        sizes = np.unique(self.groups, return_counts=True)[1]
        # a stratum of one prompt never varies: many of them make the intervals too narrow
        return {
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "level": self.level,
            "method": "percentile",
            "strata": len(sizes),
            "smallest_stratum": int(sizes.min()),
        }


def contains(interval, value: float) -> bool:
    low, high = interval
    return bool(low <= value <= high)


def crosses(intervals, value: float = 0.0) -> np.ndarray:
    """[..., 2] intervals -> [...] whether each contains `value` (an effect not told apart from it)."""
    intervals = np.asarray(intervals)
    return (intervals[..., 0] <= value) & (value <= intervals[..., 1])


def jaccard(a, b) -> float:
    """|a & b| / |a | b| of two sets (1 for two empty sets)."""
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def overlap(found, known) -> dict:
    """How a found set of components meets a known one: precision (of the found, those known), recall (of the
    known, those found), and the components missed and extra."""
    found, known = set(found), set(known)
    return {
        "precision": len(found & known) / len(found) if found else None,
        "recall": len(found & known) / len(known) if known else None,
        "missed": sorted(known - found),
        "extra": sorted(found - known),
    }


def with_interval(interval) -> str:
    """` [low, high]` to print after a value, or nothing without an interval."""
    return "" if interval is None else f" [{interval[0]:.3f}, {interval[1]:.3f}]"


def rounded(array, digits: int = 6):
    """A float array as nested lists for results.json, rounded so files stay small and stable."""
    return np.round(np.asarray(array, dtype=np.float64), digits).tolist()


def closeness_test(found: float, random) -> dict:
    """A found circuit's distance from the model (any statistic, smaller is closer) against random circuits':
    `percentile`, the share of random circuits farther; `p_value`, (1 + the number at least as close) / (n + 1)."""
    random = np.asarray(random, dtype=np.float64)
    return {
        "percentile": float(100 * (random > found).mean()) if len(random) else None,
        "p_value": float((1 + (random <= found).sum()) / (len(random) + 1)),
    }
