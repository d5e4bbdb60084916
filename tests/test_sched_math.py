"""S2Sched math: the pure function against an independent plain-Python reference and hand-worked
numbers, the authors'-code options, allocate, input checks, and the incremental form."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import recfound.sched
from recfound.sched import IncrementalS2Sched, allocate, s2sched_ratios, s2sched_terms
from recfound.sched.expsum import DIRECT_MAX, ExpSum


# ----- an independent reference: plain loops over Python floats, nothing shared with the module -----

def ref_slope(ys):
    n = len(ys)
    mean_x, mean_y = (n - 1) / 2, sum(ys) / n
    return sum((x - mean_x) * (y - mean_y) for x, y in enumerate(ys)) / sum((x - mean_x) ** 2 for x in range(n))


def ref_softmax(values):
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def ref_ratios(history, window, tau, logit_scale=False, min_ratio=0.0, size_prior=None, max_loss_slope=False):
    """Eqs. 3-6 as the paper writes them, plus the options as the authors' code applies them."""
    points, k = len(history), len(history[0])
    if points < 2:
        return [1 / k] * k
    norm = [[row[i] / history[0][i] for i in range(k)] for row in history]
    alphas, max_loss_slopes = [], []
    for s in range(2, points + 1):
        rows = norm[max(1, s - window + 1) - 1: s]
        alphas.append([ref_slope([row[i] for row in rows]) for i in range(k)])
        max_loss_slopes.append(ref_slope([max(row) for row in rows]))
    alpha, t = alphas[-1], len(alphas)
    total = sum(abs(a) for a in alpha)
    inter = [-p for p in ref_softmax([k * a / total if total else 0.0 for a in alpha])]
    recent = alphas[-min(window, t):]
    intra_logits = []
    for i in range(k):
        den = sum(abs(row[i]) for row in recent)
        intra_logits.append(-len(recent) * alpha[i] / den if den else 0.0)
    intra = ref_softmax(intra_logits)
    if max_loss_slope:
        m, big_m = max_loss_slopes, [abs(v) for v in max_loss_slopes]
    else:
        m, big_m = [max(row) for row in alphas], [max(abs(a) for a in row) for row in alphas]
    s_total = sum(big_m)
    z = [-tau * t * mk / s_total if s_total else 0.0 for mk in m]
    beta = min(t * ref_softmax(z)[-1], 1.0)
    logits = [-beta * inter[i] + (1 - beta) * intra[i] for i in range(k)]
    w = ref_softmax([k * x for x in logits] if logit_scale else logits)
    if size_prior:
        mean = sum(size_prior) / k
        w = [w[i] * size_prior[i] / mean for i in range(k)]
        w = [x / sum(w) for x in w]
    if min_ratio and any(x < min_ratio for x in w):
        w = [min_ratio + (1 - k * min_ratio) * x for x in w]
    return w


def noisy_history(points, k, seed, noise=0.02):
    rng = np.random.default_rng(seed)
    steps = np.arange(points)[:, None]
    decay = rng.uniform(0.2, 2, k) * np.exp(-steps * rng.uniform(0.001, 0.2, k))
    return rng.uniform(0.5, 2, k) + decay + noise * rng.standard_normal((points, k))


STEEP_AND_FLAT = [[1.0, 1.0], [0.8, 1.0], [0.6, 1.0]]


# ----- hand-worked cases -----

def test_steep_next_to_flat_by_hand():
    # alpha = [-0.2, 0]; Eq. 3 logits [-2, 0] -> gamma_inter = -[s, 1-s] with s = e^-2 / (1 + e^-2);
    # m = [0, 0] so z = 0 and beta = 2 * 1/2 = 1: w = softmax([s, 1-s]); (1-s) - s = tanh(1).
    w0 = 1 / (1 + math.exp(math.tanh(1)))
    terms = s2sched_terms(STEEP_AND_FLAT, 64, 10.0)
    assert terms.beta == 1.0
    np.testing.assert_allclose(terms.alpha, [-0.2, 0.0], atol=1e-15)
    np.testing.assert_allclose(terms.ratios, [w0, 1 - w0], rtol=1e-13)
    assert terms.ratios[0] < terms.ratios[1]  # the fast-converging task gets fewer samples


def test_diverging_task_by_hand():
    # task 0 rises, task 1 falls at the same rate: alpha = [0.1, -0.1], Eq. 3 logits [1, -1],
    # m = [0.1, 0.1] so z is constant and beta = 1: w = softmax(softmax([1, -1])) = [s, 1-s], s = sigmoid(tanh 1).
    terms = s2sched_terms([[1.0, 1.0], [1.1, 0.9], [1.2, 0.8]], 64, 10.0)
    s = 1 / (1 + math.exp(-math.tanh(1)))
    np.testing.assert_allclose(terms.ratios, [s, 1 - s], rtol=1e-13)
    np.testing.assert_allclose(terms.intra, ref_softmax([-1.0, 1.0]), rtol=1e-13)


def test_window_of_two_uses_consecutive_differences():
    history = [[2.0, 1.0], [1.0, 1.0], [1.5, 0.5], [1.0, 0.25]]
    terms = s2sched_terms(history, 2, 10.0)
    np.testing.assert_allclose(terms.alpha, [1.0 / 2 - 1.5 / 2, 0.25 - 0.5], atol=1e-15)
    np.testing.assert_allclose(terms.ratios, ref_ratios(history, 2, 10.0), rtol=1e-12)


def test_beta_below_one_when_the_worst_slope_turns_up():
    history = [[1.0, 1.0], [0.7, 0.9], [0.5, 0.8], [0.45, 0.85], [0.5, 0.95]]
    terms = s2sched_terms(history, 3, 1.0)
    assert 0 < terms.beta < 1
    np.testing.assert_allclose(terms.ratios, ref_ratios(history, 3, 1.0), rtol=1e-12)


# ----- against the reference -----

@pytest.mark.parametrize("points,k,window,tau",
                         [(5, 3, 64, 10.0), (40, 4, 8, 10.0), (60, 13, 64, 1.0), (30, 2, 2, 3.0)])
def test_matches_reference_on_noisy_histories(points, k, window, tau):
    history = noisy_history(points, k, seed=points * k)
    for end in (2, 3, points // 2, points):
        np.testing.assert_allclose(s2sched_ratios(history[:end], window, tau),
                                   ref_ratios(history[:end].tolist(), window, tau), rtol=1e-11)


def test_history_shorter_than_window():
    history = noisy_history(6, 3, seed=1)
    np.testing.assert_allclose(s2sched_ratios(history, 64, 10.0), ref_ratios(history.tolist(), 64, 10.0), rtol=1e-12)
    assert np.allclose(s2sched_ratios(history, 64, 10.0), s2sched_ratios(history, 6, 10.0))  # window not full yet


def test_fewer_than_two_points_give_equal_ratios():
    np.testing.assert_array_equal(s2sched_ratios([[3.0, 1.0, 2.0]], 64, 10.0), [1 / 3] * 3)
    assert s2sched_terms([[3.0, 1.0]], 64, 10.0).beta is None


@pytest.mark.parametrize("window", [2, 5, 64])
def test_all_flat_histories_give_exactly_equal_ratios(window):
    flat = [[2.0, 0.3, 7.0]] * 10
    np.testing.assert_array_equal(s2sched_ratios(flat, window, 10.0), [1 / 3] * 3)


def test_mirror_symmetric_history_has_exactly_zero_slope():
    # 0.1, 0.3, 0.2, 0.3, 0.1 has slope 0; a rounded sum can leave ~1e-17, which Eqs. 3-4 would blow up
    column = [0.1, 0.3, 0.2, 0.3, 0.1]
    history = [[v, 1.0] for v in column]
    assert s2sched_terms(history, 64, 10.0).alpha[0] == 0.0
    np.testing.assert_array_equal(s2sched_ratios(history, 64, 10.0), [0.5, 0.5])


def test_tied_tasks_get_identical_ratios():
    rng = np.random.default_rng(3)
    column = 1 + rng.uniform(0, 1, (12, 1))
    history = np.hstack([column, column, 1 + rng.uniform(0, 1, (12, 1)), column])
    ratios = s2sched_ratios(history, 5, 10.0)
    assert ratios[0] == ratios[1] == ratios[3]
    np.testing.assert_allclose(ratios, ref_ratios(history.tolist(), 5, 10.0), rtol=1e-12)


def test_scale_of_each_task_does_not_matter():
    history = noisy_history(20, 3, seed=4)
    np.testing.assert_allclose(s2sched_ratios(history * [1.0, 1000.0, 0.001], 8, 10.0),
                               s2sched_ratios(history, 8, 10.0), rtol=1e-12)


# ----- the authors'-code options -----

@pytest.mark.parametrize("options", [
    {"logit_scale": True},
    {"min_ratio": 0.2},
    {"size_prior": [100, 3000, 500, 20]},
    {"max_loss_slope": True},
    {"logit_scale": True, "min_ratio": 0.05, "size_prior": [1, 2, 3, 4], "max_loss_slope": True},
])
def test_options_match_reference(options):
    history = noisy_history(30, 4, seed=5)
    for end in (3, 12, 30):
        np.testing.assert_allclose(s2sched_ratios(history[:end], 8, 10.0, **options),
                                   ref_ratios(history[:end].tolist(), 8, 10.0, **options), rtol=1e-11)


def test_options_by_hand_on_the_two_task_example():
    t = math.tanh(1)
    w0 = 1 / (1 + math.exp(2 * t))  # logit_scale: logits times K = 2
    np.testing.assert_allclose(s2sched_ratios(STEEP_AND_FLAT, 64, 10.0, logit_scale=True), [w0, 1 - w0], rtol=1e-13)
    w0 = 1 / (1 + math.exp(t))
    prior = np.array([w0 * 0.5, (1 - w0) * 1.5])  # pool sizes 1 and 3: mean 2
    np.testing.assert_allclose(s2sched_ratios(STEEP_AND_FLAT, 64, 10.0, size_prior=[1, 3]), prior / prior.sum(),
                               rtol=1e-13)
    floored = 0.4 + (1 - 2 * 0.4) * np.array([w0, 1 - w0])  # w0 = 0.318 < 0.4
    np.testing.assert_allclose(s2sched_ratios(STEEP_AND_FLAT, 64, 10.0, min_ratio=0.4), floored, rtol=1e-13)
    np.testing.assert_allclose(s2sched_ratios(STEEP_AND_FLAT, 64, 10.0, min_ratio=0.3), [w0, 1 - w0], rtol=1e-13)


def test_max_loss_slope_changes_beta():
    history = [[1.0, 1.0], [0.7, 0.9], [0.5, 0.8], [0.45, 0.85], [0.5, 0.95]]
    paper = s2sched_terms(history, 3, 1.0).beta
    authors = s2sched_terms(history, 3, 1.0, max_loss_slope=True).beta
    assert paper != authors
    np.testing.assert_allclose(s2sched_ratios(history, 3, 1.0, max_loss_slope=True),
                               ref_ratios(history, 3, 1.0, max_loss_slope=True), rtol=1e-12)


# ----- input checks -----

@pytest.mark.parametrize("history,match", [
    ([[1.0, float("nan")]], "history must be finite and > 0.*index \\(0, 1\\)"),
    ([[1.0, 2.0], [float("inf"), 1.0]], "history must be finite"),
    ([[1.0, 0.0]], "history must be finite and > 0"),
    ([[1.0, -2.0]], "history must be finite and > 0"),
    (np.empty((0, 3)), "history must have shape"),
    ([1.0, 2.0], "history must have shape"),
    (np.ones((2, 2, 2)), "history must have shape"),
    ([[1.0, 2.0], [1.0]], "history must be a numeric array"),
])
def test_bad_history_is_rejected(history, match):
    with pytest.raises(ValueError, match=match):
        s2sched_ratios(history, 64, 10.0)


@pytest.mark.parametrize("kwargs,match", [
    ({"window": 1}, "window"), ({"window": 2.5}, "window"), ({"temperature": 0.0}, "temperature"),
    ({"temperature": -1.0}, "temperature"), ({"temperature": float("nan")}, "temperature"),
    ({"min_ratio": 0.6}, "min_ratio"), ({"min_ratio": -0.1}, "min_ratio"), ({"size_prior": [1, 2, 3]}, "size_prior"),
    ({"size_prior": [1, 0]}, "size_prior"), ({"typo": True}, "unknown S2Sched option"),
    ({"slope_history_start": 1}, "slope_history_start"), ({"slope_history_start": 2.0}, "slope_history_start"),
])
def test_bad_parameters_are_rejected(kwargs, match):
    args = {"history": [[1.0, 1.0], [0.9, 1.0]], "window": 64, "temperature": 10.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        s2sched_ratios(**args)


# ----- allocate -----

@pytest.mark.parametrize("batch,ratios,expected", [
    (10, [0.25, 0.25, 0.5], [3, 2, 5]),  # 2.5, 2.5, 5: one left over, the tie goes to task 0
    (10, [1 / 3] * 3, [4, 3, 3]),
    (7, [0.1, 0.2, 0.7], [1, 1, 5]),  # 0.7, 1.4, 4.9: two left over, to fractions .9 and .7
    (5, [1.0, 0.0, 0.0], [5, 0, 0]),
    (0, [0.5, 0.5], [0, 0]),
    (3, [0.5, 0.5], [2, 1]),
    (2048, [0.2, 0.3, 0.5], [410, 614, 1024]),  # 409.6, 614.4, 1024
])
def test_allocate_by_hand(batch, ratios, expected):
    counts = allocate(batch, ratios)
    assert counts.tolist() == expected and counts.dtype.kind == "i"


@pytest.mark.parametrize("batch,ratios,match", [
    (-1, [1.0], "batch_size"), (2.0, [1.0], "batch_size"), (4, [0.5, 0.6], "ratios"), (4, [1.5, -0.5], "ratios"),
    (4, [float("nan"), 1.0], "ratios"), (4, [], "ratios"),
])
def test_allocate_rejects_bad_input(batch, ratios, match):
    with pytest.raises(ValueError, match=match):
        allocate(batch, ratios)


# ----- properties -----

histories = st.integers(1, 5).flatmap(lambda k: st.lists(
    st.lists(st.floats(0.05, 20.0), min_size=k, max_size=k), min_size=1, max_size=25))
options = st.fixed_dictionaries({}, optional={"logit_scale": st.booleans(), "max_loss_slope": st.booleans(),
                                              "min_ratio": st.sampled_from([0.0, 0.01, 0.1]),
                                              "first_point_baseline": st.booleans(),
                                              "slope_history_start": st.integers(2, 12),
                                              "intra_step_index": st.booleans()})


@settings(max_examples=60, deadline=None)
@given(histories, st.integers(2, 8), st.floats(0.1, 50.0), options)
def test_ratios_are_a_distribution(history, window, tau, opts):
    if opts.get("min_ratio", 0) * len(history[0]) > 1:
        opts["min_ratio"] = 0.0
    ratios = s2sched_ratios(history, window, tau, **opts)
    assert ratios.shape == (len(history[0]),)
    assert np.all(np.isfinite(ratios)) and np.all(ratios > 0)
    assert abs(ratios.sum() - 1) < 1e-12


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 5000), st.lists(st.floats(0.0, 1.0), min_size=1, max_size=13))
def test_counts_sum_to_the_batch(batch, weights):
    if sum(weights) == 0:
        weights = [1.0] * len(weights)
    ratios = np.array(weights) / sum(weights)
    counts = allocate(batch, ratios)
    assert counts.sum() == batch and np.all(counts >= 0)
    assert np.all(np.abs(counts - batch * ratios) < 1)  # each within one record of its exact share


@settings(max_examples=40, deadline=None)
@given(histories, st.integers(2, 8), st.floats(0.1, 50.0), options)
def test_incremental_equals_pure(history, window, tau, opts):
    if opts.get("min_ratio", 0) * len(history[0]) > 1:
        opts["min_ratio"] = 0.0
    incremental = IncrementalS2Sched(len(history[0]), window, tau, **opts)
    for end in range(1, len(history) + 1):
        got, expected = incremental.add(history[end - 1]), s2sched_terms(history[:end], window, tau, **opts)
        np.testing.assert_allclose(got.ratios, expected.ratios, rtol=0, atol=1e-12)
        assert (got.beta is None) == (expected.beta is None)
        if got.beta is not None:
            assert abs(got.beta - expected.beta) < 1e-12


def test_incremental_equals_pure_on_a_long_history():
    # long enough for the bucketed softmax sum of Eq. 5 (more than DIRECT_MAX slopes)
    history = noisy_history(DIRECT_MAX + 600, 4, seed=7, noise=0.01)
    incremental = IncrementalS2Sched(4, 16, 10.0)
    for end in range(1, len(history) + 1):
        got = incremental.add(history[end - 1])
        if end in (DIRECT_MAX + 10, len(history)):
            expected = s2sched_terms(history[:end], 16, 10.0)
            np.testing.assert_allclose(got.ratios, expected.ratios, rtol=0, atol=1e-12)
            assert abs(got.beta - expected.beta) < 1e-12 * max(expected.beta, 1e-3)
    assert incremental._m._width is not None  # the buckets were used


def test_incremental_checks_its_rows():
    incremental = IncrementalS2Sched(2, 4, 1.0)
    with pytest.raises(ValueError, match="losses has 3 values for 2 tasks"):
        incremental.add([1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="losses must be finite"):
        incremental.add([1.0, float("nan")])
    assert incremental.points == 0


# ----- the bucketed exponential sum behind Eq. 5 -----

@pytest.mark.parametrize("scale", [-3e4, -2000.0, -50.0, -1.0, 0.0, 7.0])
def test_expsum_matches_a_direct_sum(scale):
    rng = np.random.default_rng(11)
    values = np.concatenate([rng.normal(0, 1e-3, 6000), rng.normal(-2e-2, 1e-3, 50)])
    expsum = ExpSum()
    for v in values:
        expsum.append(float(v))
    ref = float(values[-1])
    direct = math.log(math.fsum(math.exp(x) for x in scale * (values - ref)))
    assert expsum.log_sum(scale, ref) == pytest.approx(direct, rel=1e-13, abs=1e-13)
    for v in rng.normal(0, 1e-3, 100):  # values added after the buckets were built
        expsum.append(float(v))
        values = np.append(values, v)
    direct = math.log(math.fsum(math.exp(x) for x in scale * (values - ref)))
    assert expsum.log_sum(scale, ref) == pytest.approx(direct, rel=1e-13, abs=1e-13)


def test_the_math_imports_neither_ray_nor_torch():
    code = ("import sys, recfound.sched; recfound.sched.s2sched_ratios([[1.0]], 2, 1.0); "
            "print(sorted(m for m in ('ray', 'torch', 'matplotlib') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(Path(recfound.sched.__file__).parents[2])}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"
