"""The `authors` S2Sched preset against a plain transcription of the authors' scheduler (CoBaStatus in
training/utils/loss_utils.py of github JunkFood436/RecFound), its incremental form, and its wiring."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recfound.sched import (IncrementalS2Sched, KindSpec, SchedConfig, Scheduler, ScheduleSpec, authors_options,
                            s2sched_terms)

# ----- the transcription: their compute_per_task_weight for one task group, loops over float64 -----
#
# History mapping: our point 1 is their valid_task_loss_begining (the evaluation that only normalizes),
# our points 2..T are their history columns, and T points stand for completed_steps = T (update interval 1).
# Where their code divides 0 by 0 (a term whose slopes are all exactly 0) the guards below give the logit 0
# (divergence 1), the documented `authors` choice. Their slope is a torch.linalg.solve of the normal
# equations; here it is the same least-squares slope summed exactly (see test_their_solver_is_the_same_slope).


def fit_window_slope(x, y):
    y = [v for v in y if v != 0]
    x = x[:len(y)]
    if len(y) < 2:
        return 0.0
    mean_x = sum(x) / len(x)
    return math.fsum((xi - mean_x) * yi for xi, yi in zip(x, y)) / math.fsum((xi - mean_x) ** 2 for xi in x)


def softmax(values):
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


class AuthorsCoBa:
    def __init__(self, history_length, tau, warmup_steps, task_nums):
        self.coba_history_length, self.coba_tau, self.coba_warmup_steps = history_length, tau, warmup_steps
        self.task_nums = task_nums
        self.per_task_slope_list = None
        self.total_slope_list = []

    def compute_per_task_weight(self, history, completed_steps):
        """history[i]: task i's normalized validation losses so far; returns (weights, divergence)."""
        task_num = len(history)
        start_step = max(0, completed_steps - self.coba_history_length)
        history_steps = list(range(start_step, completed_steps))

        task_slope_fitting = [fit_window_slope(history_steps, history[i][-len(history_steps):])
                              for i in range(task_num)]
        if completed_steps == self.coba_warmup_steps:
            self.per_task_slope_list = [[slope] for slope in task_slope_fitting]
        else:
            for i in range(task_num):
                self.per_task_slope_list[i].append(task_slope_fitting[i])

        window = [row[-len(history_steps):] for row in history]
        history_loss = [max(window[i][j] for i in range(task_num)) for j in range(len(window[0]))]
        self.total_slope_list.append(fit_window_slope(history_steps, history_loss))

        def compute_divergence(slope_history):
            n, total = len(slope_history), sum(abs(s) for s in slope_history)
            normalized = [-n * s / total if total else 0.0 for s in slope_history]  # guard: 0 / 0
            return min(softmax([v * self.coba_tau for v in normalized])[-1] * n, 1.0)

        divergence = compute_divergence(self.total_slope_list)

        group_slope = task_slope_fitting
        group_history = [row[start_step:] for row in self.per_task_slope_list]
        total = sum(abs(s) for s in group_slope)
        rcs = softmax([task_num * s / total if total else 0.0 for s in group_slope])  # guard: 0 / 0
        current_slope = []
        for row in group_history:
            row_total = sum(abs(s) for s in row)
            current_slope.append(-len(row) * row[-1] / row_total if row_total else 0.0)  # guard: 0 / 0
        acs = softmax(current_slope)
        weight_logits = [divergence * rcs[i] + (1 - divergence) * acs[i] for i in range(task_num)]
        weights = softmax([v * task_num for v in weight_logits])

        ratio = [n / (sum(self.task_nums) / task_num) for n in self.task_nums]
        scaled = [w * r for w, r in zip(weights, ratio)]
        weights = [v / sum(abs(x) for x in scaled) for v in scaled]

        min_weight = 1 / (task_num * 5)
        if any(w < min_weight for w in weights):
            weights = [w * (1 - min_weight * task_num) + min_weight for w in weights]
        return weights, divergence


def authors_run(history, window, tau, warmup, pool_sizes, last):
    """{T: (weights, divergence)} for T = 2..last: their run for T >= warmup; below it, a run whose warm-up
    ends at T (their code computes nothing before the warm-up; `authors` treats T as the first point)."""
    begining = history[0]
    normalized = [[history[s][i] / begining[i] for s in range(1, len(history))] for i in range(len(begining))]

    def columns(steps):
        return [row[:steps - 1] for row in normalized]

    results = {}
    for steps in range(2, min(warmup, last + 1)):
        results[steps] = AuthorsCoBa(window, tau, steps, pool_sizes).compute_per_task_weight(columns(steps), steps)
    status = AuthorsCoBa(window, tau, warmup, pool_sizes)
    for steps in range(warmup, last + 1):
        results[steps] = status.compute_per_task_weight(columns(steps), steps)
    return results


# ----- histories -----

POINTS = 200


def falling(k, seed, noise=0.01):
    rng = np.random.default_rng(seed)
    steps = np.arange(POINTS)[:, None]
    floor, drop, rate = rng.uniform(0.5, 2, k), rng.uniform(0.5, 3, k), rng.uniform(0.005, 0.08, k)
    return floor + drop * np.exp(-rate * steps) + noise * rng.standard_normal((POINTS, k))


def diverging(k, seed):
    history = falling(k, seed)
    history[80:, 1] += 0.01 * np.arange(POINTS - 80)  # task 1 turns up after point 80
    return history


def noisy(k, seed):
    return np.abs(falling(k, seed, noise=0.3)) + 0.05


def flat_task(k, seed):
    history = falling(k, seed)
    history[:, 0] = 2.5  # exactly flat: their Eq. 4 divides 0 by 0 for it, and the maximum loss never moves
    return history


HISTORIES = {"falling": falling, "diverging": diverging, "noisy": noisy, "flat task": flat_task}


@pytest.mark.parametrize("kind", list(HISTORIES))
@pytest.mark.parametrize("k,window,tau,warmup", [(3, 64, 1.0, 32), (10, 64, 1.0, 32), (10, 64, 10.0, 2),
                                                 (4, 16, 1.0, 10), (3, 16, 5.0, 16)])
def test_authors_preset_equals_their_code(kind, k, window, tau, warmup):
    history = HISTORIES[kind](k, seed=k * window + warmup)
    pools = [int(n) for n in np.random.default_rng(k).integers(100, 10000, k)]
    options = authors_options(k, pools, warmup)
    expected = authors_run(history.tolist(), window, tau, warmup, pools, POINTS)
    ratio_error = beta_error = 0.0
    for points in range(2, POINTS + 1):
        terms = s2sched_terms(history[:points], window, tau, **options)
        weights, divergence = expected[points]
        ratio_error = max(ratio_error, float(np.max(np.abs(terms.ratios - weights))))
        beta_error = max(beta_error, abs(terms.beta - divergence))
    assert ratio_error <= 1e-9 and beta_error <= 1e-9, (ratio_error, beta_error)


def test_flat_task_gets_logit_zero_where_their_code_divides_0_by_0():
    history = flat_task(3, seed=1)[:50]
    terms = s2sched_terms(history, 64, 1.0, **authors_options(3, [1, 1, 1], 32))
    assert terms.alpha[0] == 0.0 and np.all(np.isfinite(terms.ratios))
    assert terms.beta == 1.0  # the maximum normalized loss is the flat task's 1.0: its slopes are all 0
    # Eq. 4 over the n = 50 - 32 + 1 slopes since the warm-up point: logit 0 for the flat task,
    # -n * alpha_i / sum |alpha_i| for the others (slopes fit without point 1)
    alphas = np.array([s2sched_terms(history[:t], 64, 1.0, first_point_baseline=True).alpha for t in range(32, 51)])
    logits = [0.0] + [-19 * alphas[-1, i] / np.abs(alphas[:, i]).sum() for i in (1, 2)]
    np.testing.assert_allclose(terms.intra, softmax(logits), rtol=1e-12)


def test_their_solver_is_the_same_slope():
    rng = np.random.default_rng(5)
    for start in (0, 31, 400, 5000):
        x = np.arange(start, start + 64, dtype=np.float64)
        y = 1 + 0.3 * np.exp(-0.01 * x) + 0.01 * rng.standard_normal(64)
        design = np.stack([x, np.ones_like(x)]).T
        solved = np.linalg.solve(design.T @ design, design.T @ y)[0]
        assert solved == pytest.approx(fit_window_slope(list(x), list(y)), rel=1e-8)


def test_warmup_longer_than_the_window_keeps_the_current_slope():
    # their slice per_task_slope_list[:, step - L:] is empty once the warm-up exceeds L (0 / 0 again);
    # `authors` keeps the current slope, so Eq. 4's logits are -alpha / |alpha|
    history = falling(3, seed=2)[:40]
    terms = s2sched_terms(history, 8, 1.0, **authors_options(3, [1, 2, 3], 30))
    np.testing.assert_allclose(terms.intra, softmax(list(-np.sign(terms.alpha))), rtol=1e-12)


@pytest.mark.parametrize("kind", list(HISTORIES))
@pytest.mark.parametrize("window,warmup", [(64, 32), (16, 10), (8, 30)])
def test_incremental_equals_pure_under_the_authors_preset(kind, window, warmup):
    history = HISTORIES[kind](4, seed=window)
    options = authors_options(4, [50, 5, 500, 80], warmup)
    incremental = IncrementalS2Sched(4, window, 1.0, **options)
    for points in range(1, POINTS + 1):
        got, expected = incremental.add(history[points - 1]), s2sched_terms(history[:points], window, 1.0, **options)
        np.testing.assert_allclose(got.ratios, expected.ratios, rtol=0, atol=1e-12)
        assert (got.beta is None) == (expected.beta is None)
        if got.beta is not None:
            assert abs(got.beta - expected.beta) < 1e-12


def test_authors_options_are_checked():
    with pytest.raises(ValueError, match="pool_sizes must give one pool size per task"):
        authors_options(3, [1, 2], 32)
    with pytest.raises(ValueError, match="warmup_points"):
        authors_options(3, [1, 2, 3], -1)
    with pytest.raises(ValueError, match="num_tasks"):
        authors_options(0, [], 32)
    assert authors_options(10, [1] * 10, 0)["slope_history_start"] == 2
    assert authors_options(10, [1] * 10, 32)["min_ratio"] == 1 / 50


# ----- the preset in a run: SchedConfig and the scheduler -----

def test_scheduler_uses_the_authors_preset_with_its_warmup_points():
    pools = {"embedding": (900, 400, 800), "generative": (60, 200, 40)}
    kinds = {"embedding": KindSpec(["U2I", "Q2I", "I2I"], 32, pools["embedding"]),
             "generative": KindSpec(["QR", "SA", "PM"], 16, pools["generative"])}
    config = SchedConfig(window=8, temperature=1.0, warmup_ratio=0.25, preset="authors")
    scheduler = Scheduler(ScheduleSpec(kinds, 40, 1, 2, config))  # warm-up 10 steps = 5 points of 2 steps
    histories = {"embedding": falling(3, seed=3)[:20], "generative": diverging(3, seed=4)[:20]}
    names = [task for spec in kinds.values() for task in spec.tasks]
    for point in range(20):
        losses = np.concatenate([histories["embedding"][point], histories["generative"][point]])
        scheduler.report(2 * (point + 1), 0, dict(zip(names, losses.tolist())), dict.fromkeys(names, 1))
    served = scheduler.counts(41 - 2)  # step 39 sees the points of steps 2..38: 19 points
    for kind, spec in kinds.items():
        expected = s2sched_terms(histories[kind][:19], 8, 1.0, **authors_options(3, pools[kind], 5)).ratios
        np.testing.assert_allclose(list(served["ratios"][kind].values()), expected, rtol=0, atol=1e-12)
    paper = s2sched_terms(histories["generative"][:19], 8, 1.0).ratios
    assert np.max(np.abs(paper - expected)) > 1e-3  # the preset changed the numbers


@pytest.mark.parametrize("kwargs,match", [
    ({"preset": "mine"}, "preset must be one of paper, authors"),
    ({"preset": "authors", "logit_scale": True}, "logit_scale cannot be set with preset authors"),
    ({"preset": "authors", "min_ratio": 0.05}, "min_ratio cannot be set with preset authors"),
])
def test_preset_contradictions_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SchedConfig(**kwargs)


def test_paper_preset_takes_the_options_one_by_one():
    config = SchedConfig(preset="paper", logit_scale=True, size_prior=True)
    assert config.options(2, (1, 3), 5) == {"logit_scale": True, "min_ratio": 0.0, "max_loss_slope": False,
                                            "size_prior": (1, 3)}
    assert SchedConfig(preset="authors").options(2, (1, 3), 5) == authors_options(2, (1, 3), 5)
