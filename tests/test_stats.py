"""interp.stats: the seeded, stratified percentile bootstrap against scipy's and against hand computations."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from interp.errors import InterpError
from interp.stats import Bootstrap, check_resamples, crosses, resample_counts


def test_mean_interval_agrees_with_scipy():
    """Different resamples, so agreement up to Monte Carlo error: at 20,000 resamples of 200 values an endpoint
    moves by about 0.7% of the interval's width between two runs (0.8% here); a 90% interval is off by 7% to 9%,
    the median's by about the whole width."""
    values = np.random.default_rng(1).exponential(size=200)  # skewed: the percentile interval is not symmetric
    ours = Bootstrap.over(np.zeros(200), 20000, seed=2).mean_interval(values)
    theirs = scipy_stats.bootstrap(
        (values,), np.mean, n_resamples=20000, vectorized=True, method="percentile", rng=np.random.default_rng(3)
    ).confidence_interval
    width = theirs.high - theirs.low
    assert ours == pytest.approx([theirs.low, theirs.high], abs=0.03 * width)
    assert values.mean() - ours[0] < ours[1] - values.mean()  # the right skew shows


def test_mean_interval_equals_a_hand_computation_with_the_same_counts():
    values = np.random.default_rng(4).normal(size=(3, 30))  # three series of 30 prompts
    groups = ["a"] * 10 + ["b"] * 20
    bootstrap = Bootstrap.over(groups, 500, seed=5)
    counts = resample_counts(groups, 500, 5)
    assert np.array_equal(bootstrap.counts, counts)
    for series, interval in zip(values, bootstrap.mean_interval(values)):
        means = [np.repeat(series, row).mean() for row in counts]  # each resample's prompts, written out
        assert interval == pytest.approx(np.percentile(means, [2.5, 97.5]), abs=1e-12)
    ratio = bootstrap.statistic_interval(lambda a, b: a / b, values[0] ** 2, values[1] ** 2)
    hand = [np.repeat(values[0] ** 2, row).mean() / np.repeat(values[1] ** 2, row).mean() for row in counts]
    assert ratio == pytest.approx(np.percentile(hand, [2.5, 97.5]), abs=1e-12)


def test_resamples_follow_the_documented_draws():
    """numpy's default_rng(seed); for each group in order of first appearance, n_resamples rows of as many draws
    with replacement as the group has prompts: what `interp capitals`' results say others can rebuild."""
    groups = np.array(["x", "y", "x", "z", "y", "x"])
    rng = np.random.default_rng(7)
    expected = np.zeros((40, len(groups)), dtype=np.int64)
    for group in ("x", "y", "z"):
        members = np.flatnonzero(groups == group)
        for r, drawn in enumerate(rng.integers(0, len(members), size=(40, len(members)))):
            for i in members[drawn]:
                expected[r, i] += 1
    assert np.array_equal(resample_counts(groups, 40, 7), expected)


def test_stratification_keeps_each_groups_size():
    groups = np.array(["a", "b", "c"] * 7 + ["a"] * 5)  # interleaved: a 12, b 7, c 7
    counts = Bootstrap.over(groups, 300, seed=0).counts
    for group in ("a", "b", "c"):
        members = groups == group
        assert (counts[:, members].sum(1) == members.sum()).all()
    assert (counts != 1).any() and counts.max() > 1  # a real resampling, not the identity
    unstratified = resample_counts(np.zeros(len(groups)), 300, 0)
    assert not all((unstratified[:, groups == g].sum(1) == (groups == g).sum()).all() for g in "abc")


def test_seeded_resamples_repeat():
    a, b = (Bootstrap.over(["t"] * 9, 100, seed=11) for _ in range(2))
    assert np.array_equal(a.counts, b.counts)
    assert not np.array_equal(a.counts, Bootstrap.over(["t"] * 9, 100, seed=12).counts)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10", None])
def test_check_resamples_refuses_anything_but_a_whole_number(bad):
    with pytest.raises(InterpError, match=r"--bootstrap takes a whole number of resamples >= 0"):
        check_resamples(bad)


def test_zero_resamples_turn_the_bootstrap_off():
    assert check_resamples(0) == 0 and check_resamples(np.int64(5)) == 5
    assert Bootstrap.over(["a", "b"], 0) is None
    with pytest.raises(InterpError, match="one group id per prompt"):
        Bootstrap.over([], 10)
    with pytest.raises(InterpError, match="per-prompt values of 3 prompts"):
        Bootstrap.over(["a", "b"], 10).means(np.zeros(3))


def test_crosses_marks_intervals_holding_the_value():
    """What the IOI grid figures mark: intervals [..., 2] that hold a value (ends included)."""
    intervals = np.array([[[-0.1, 0.2], [0.05, 0.3]], [[0.1, 0.4], [-0.3, -0.06]]])
    assert crosses(intervals, 0.0).tolist() == [[True, False], [False, False]]
    assert crosses(intervals, 0.05).tolist() == [[True, True], [False, False]]
    assert crosses(intervals, -0.05).tolist() == [[True, False], [False, False]]


def test_overlap_counts_found_against_known_by_hand():
    from interp.stats import overlap

    assert overlap({"a", "b", "c"}, {"b", "c", "d", "e"}) == {
        "precision": 2 / 3,
        "recall": 2 / 4,
        "missed": ["d", "e"],
        "extra": ["a"],
    }
    assert overlap(set(), {"a"})["precision"] is None and overlap({"a"}, set())["recall"] is None
