"""GANet's metrics (Ye et al., SPIE 2020, eqs 4-7), the IDRiD AUPR and their streaming accumulator.

References used here: hand-computed cases, float64 brute force written in this file (pixel loops,
pair counting), and scikit-learn's average_precision_score / roc_auc_score where installed.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from group_attention.metrics import (
    SegmentationMetrics,
    accuracy,
    aupr,
    aupr_error_bound,
    aupr_from_histogram,
    confusion_counts,
    dice,
    roc_auc,
    roc_auc_error_bound,
    roc_auc_from_histogram,
    score_histogram,
    sensitivity,
    specificity,
)

FAST = settings(max_examples=40, deadline=None)
EXACT = dict(rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- float64 brute force


def brute_counts(pred: torch.Tensor, target: torch.Tensor, threshold: float) -> list[tuple[int, int, int, int]]:
    """(TP, FP, FN, TN) of every image, one pixel at a time."""
    counts = []
    for image_pred, image_target in zip(pred, target):
        tp = fp = fn = tn = 0
        for p, g in zip(image_pred.flatten().tolist(), image_target.flatten().tolist()):
            positive = p >= threshold if isinstance(p, float) else bool(p)
            tp += positive and g
            fp += positive and not g
            fn += (not positive) and g
            tn += (not positive) and not g
        counts.append((tp, fp, fn, tn))
    return counts


def brute_metrics(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """Eqs 4-7 with the documented empty-denominator conventions (all 1)."""
    return {
        "dice": 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 1.0,
        "accuracy": (tp + tn) / (tp + tn + fp + fn),
        "sensitivity": tp / (tp + fn) if tp + fn else 1.0,
        "specificity": tn / (tn + fp) if tn + fp else 1.0,
    }


def brute_average_precision(scores: list[float], labels: list[bool]) -> float:
    """Mean over positives of the precision at threshold 'score >= its score' (ties share one threshold)."""
    positives = [s for s, y in zip(scores, labels) if y]
    if not positives:
        return 0.0
    total = 0.0
    for s in positives:
        retrieved = [y for t, y in zip(scores, labels) if t >= s]
        total += sum(retrieved) / len(retrieved)
    return total / len(positives)


def brute_roc_auc(scores: list[float], labels: list[bool]) -> float:
    """Probability that a positive outscores a negative, ties counting 1/2 (Mann-Whitney)."""
    positives = [s for s, y in zip(scores, labels) if y]
    negatives = [s for s, y in zip(scores, labels) if not y]
    if not positives or not negatives:
        return 0.5
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def quantized(scores: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Bin index floor(K p), clipped to K - 1, as documented for the histograms."""
    return torch.clamp(torch.floor(scores.double() * num_bins), max=num_bins - 1)


# --------------------------------------------------------------------------- hypothesis data


@st.composite
def mask_pairs(draw, float_pred: bool = True):
    """(pred, target) of shape (B, *spatial), with empty, full, sparse and random masks and tied scores."""
    batch = draw(st.integers(1, 3))
    spatial = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    shape = (batch, *spatial)

    def mask(kind):
        probability = {"empty": 0.0, "full": 1.0, "sparse": 0.1, "random": 0.5}[kind]
        return torch.rand(shape, generator=generator) < probability

    target = mask(draw(st.sampled_from(["empty", "full", "sparse", "random"])))
    pred_kind = draw(st.sampled_from(["empty", "full", "sparse", "random", "grid", "continuous"]))
    if pred_kind == "grid":  # ties, and scores equal to the threshold
        pred = torch.randint(0, 5, shape, generator=generator).double() / 4
    elif pred_kind == "continuous":
        pred = torch.rand(shape, generator=generator, dtype=torch.float64)
    else:
        pred = mask(pred_kind).double()
    if not float_pred:
        pred = pred >= 0.5
    return pred, target


# --------------------------------------------------------------------------- eqs 4-7


def test_hand_computed_counts_and_metrics():
    # 0.9 -> TP, 0.2 -> FN, 0.6 -> FP, 0.5 -> FP (>= threshold), 0.1 -> TN
    pred = torch.tensor([[0.9, 0.2, 0.6, 0.5, 0.1]])
    target = torch.tensor([[1, 1, 0, 0, 0]])
    assert tuple(int(c) for c in confusion_counts(pred, target)) == (1, 2, 1, 1)
    assert dice(pred, target).item() == pytest.approx(2 / 5)
    assert accuracy(pred, target).item() == pytest.approx(2 / 5)
    assert sensitivity(pred, target).item() == pytest.approx(1 / 2)
    assert specificity(pred, target).item() == pytest.approx(1 / 3)
    assert sensitivity(pred, target, threshold=0.95).item() == 0.0


def test_per_image_and_pooled_differ_as_documented():
    # image 0: one TP (Dice 1); image 1: no lesion, one FP (Dice 0)
    pred = torch.tensor([[1, 0, 0], [0, 1, 0]], dtype=torch.bool)
    target = torch.tensor([[1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    torch.testing.assert_close(dice(pred, target), torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert dice(pred, target, per_image=False).item() == pytest.approx(2 / 3)  # 2 TP / (2 TP + FP)
    torch.testing.assert_close(sensitivity(pred, target), torch.tensor([1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(specificity(pred, target), torch.tensor([1.0, 2 / 3], dtype=torch.float64))


@pytest.mark.parametrize(
    "pred, target, expected",
    [
        ([0, 0, 0], [0, 0, 0], dict(dice=1.0, accuracy=1.0, sensitivity=1.0, specificity=1.0)),
        ([1, 1, 1], [1, 1, 1], dict(dice=1.0, accuracy=1.0, sensitivity=1.0, specificity=1.0)),
        ([1, 0, 0], [0, 0, 0], dict(dice=0.0, accuracy=2 / 3, sensitivity=1.0, specificity=2 / 3)),
        ([0, 0, 0], [1, 0, 0], dict(dice=0.0, accuracy=2 / 3, sensitivity=0.0, specificity=1.0)),
        ([0, 0, 0], [1, 1, 1], dict(dice=0.0, accuracy=0.0, sensitivity=0.0, specificity=1.0)),
    ],
    ids=["empty-empty", "full-full", "fp-only", "fn-only", "all-missed"],
)
def test_empty_denominator_conventions(pred, target, expected):
    pred, target = torch.tensor([pred], dtype=torch.bool), torch.tensor([target], dtype=torch.bool)
    for name, metric in dict(dice=dice, accuracy=accuracy, sensitivity=sensitivity, specificity=specificity).items():
        assert metric(pred, target).item() == pytest.approx(expected[name]), name


@FAST
@given(
    dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32]),
    values=st.lists(st.floats(0, 1), min_size=1, max_size=40),
    threshold=st.floats(0, 1),
)
def test_threshold_is_compared_with_the_stored_values_exactly(dtype, values, threshold):
    """``pred >= threshold`` for the values ``pred`` holds, not for a threshold rounded to its dtype: in bfloat16
    0.501 would round to 0.5 and count a stored 0.5 positive. The loop compares Python floats (float64)."""
    pred = torch.tensor([values], dtype=dtype)
    target = torch.ones_like(pred, dtype=torch.bool)
    positives = sum(p >= threshold for p in pred.flatten().tolist())
    assert int(confusion_counts(pred, target, threshold).tp) == positives


def test_threshold_just_above_a_stored_value():
    for dtype, value, threshold in (
        (torch.bfloat16, 0.5, 0.501),
        (torch.float16, 0.3001, 0.3001),
        (torch.float32, 0.7, 0.7),
    ):
        pred = torch.tensor([[value]], dtype=dtype)  # stored just below the threshold
        assert pred.item() < threshold
        assert confusion_counts(pred, torch.tensor([[1]]), threshold) == (0, 0, 1, 0), dtype


@FAST
@given(pair=mask_pairs(), threshold=st.sampled_from([0.0, 0.25, 0.5, 0.6, 1.0]))
def test_metrics_match_pixel_loop(pair, threshold):
    pred, target = pair
    expected = brute_counts(pred, target, threshold)
    counts = confusion_counts(pred, target, threshold)
    assert [tuple(int(c[i]) for c in counts) for i in range(pred.shape[0])] == expected
    pooled = tuple(int(c) for c in confusion_counts(pred, target, threshold, per_image=False))
    assert pooled == tuple(map(sum, zip(*expected)))

    for name, metric in dict(dice=dice, accuracy=accuracy, sensitivity=sensitivity, specificity=specificity).items():
        per_image = metric(pred, target, threshold)
        assert per_image.dtype == torch.float64 and per_image.shape == (pred.shape[0],)
        expected_per_image = torch.tensor([brute_metrics(*c)[name] for c in expected], dtype=torch.float64)
        torch.testing.assert_close(per_image, expected_per_image, **EXACT)
        pooled_value = metric(pred, target, threshold, per_image=False).item()
        assert pooled_value == pytest.approx(brute_metrics(*pooled)[name], rel=1e-12)


@FAST
@given(pair=mask_pairs(float_pred=False))
def test_masks_of_any_dtype_ignore_the_threshold(pair):
    pred, target = pair
    expected = dice(pred, target)
    other_dtypes = [(pred.long(), target.float()), (pred.to(torch.uint8), target.long()), (pred.double(), target)]
    for pred_as, target_as in other_dtypes:
        torch.testing.assert_close(dice(pred_as, target_as), expected)
    torch.testing.assert_close(dice(pred, target, threshold=1.0), expected)


def test_any_spatial_dims_are_pooled_per_image():
    pred, target = torch.rand(3, 1, 4, 5, 6), torch.rand(3, 1, 4, 5, 6) < 0.3
    for metric in (dice, accuracy, sensitivity, specificity, aupr, roc_auc):
        torch.testing.assert_close(metric(pred, target), metric(pred.reshape(3, -1), target.reshape(3, -1)))


def test_low_precision_probabilities():
    pred, target = torch.rand(2, 8, 8), torch.rand(2, 8, 8) < 0.3
    for dtype in (torch.float16, torch.bfloat16):
        reduced = pred.to(dtype)
        torch.testing.assert_close(dice(reduced, target), dice(reduced.float(), target))
        torch.testing.assert_close(aupr(reduced, target), aupr(reduced.float(), target))


# --------------------------------------------------------------------------- AUPR and ROC AUC


def test_hand_computed_aupr_and_roc_auc():
    # ranking 1 0 1 0: AP = (1/1 + 2/3) / 2; AUC = 3 of 4 positive-negative pairs ordered
    pred, target = torch.tensor([[0.9, 0.8, 0.7, 0.1]]), torch.tensor([[1, 0, 1, 0]])
    assert aupr(pred, target).item() == pytest.approx(5 / 6, rel=1e-12)
    assert roc_auc(pred, target).item() == pytest.approx(3 / 4, rel=1e-12)
    # a tie between a positive and a negative: one threshold with precision 1/2
    tied = torch.tensor([[0.5, 0.5]])
    assert aupr(tied, torch.tensor([[1, 0]])).item() == pytest.approx(0.5)
    assert roc_auc(tied, torch.tensor([[1, 0]])).item() == pytest.approx(0.5)


@FAST
@given(size=st.integers(2, 500), seed=st.integers(0, 2**16))
def test_a_perfect_ranking_scores_exactly_one(size, seed):
    generator = torch.Generator().manual_seed(seed)
    pred = torch.rand(1, size, generator=generator)
    target = pred >= pred.median()
    assert aupr(pred, target).item() == 1.0 and roc_auc(pred, target).item() in (1.0, 0.5)
    one_bin = score_histogram(pred, target, num_bins=1)
    assert aupr_from_histogram(one_bin).item() == pytest.approx(target.double().mean().item(), rel=1e-12), "prevalence"


def test_ranking_conventions_for_a_single_class():
    scores = torch.tensor([[0.2, 0.9, 0.4]])
    assert aupr(scores, torch.zeros(1, 3)).item() == 0.0
    assert aupr(scores, torch.ones(1, 3)).item() == 1.0
    assert roc_auc(scores, torch.zeros(1, 3)).item() == 0.5
    assert roc_auc(scores, torch.ones(1, 3)).item() == 0.5


@FAST
@given(pair=mask_pairs())
def test_exact_aupr_and_roc_auc_match_brute_force(pair):
    pred, target = pair
    for image_pred, image_target, ap, auc in zip(pred, target, aupr(pred, target), roc_auc(pred, target)):
        scores, labels = image_pred.flatten().tolist(), image_target.flatten().tolist()
        assert ap.item() == pytest.approx(brute_average_precision(scores, labels), rel=1e-12, abs=1e-12)
        assert auc.item() == pytest.approx(brute_roc_auc(scores, labels), rel=1e-12, abs=1e-12)
    scores, labels = pred.flatten().tolist(), target.flatten().tolist()
    pooled_ap, pooled_auc = aupr(pred, target, per_image=False).item(), roc_auc(pred, target, per_image=False).item()
    assert pooled_ap == pytest.approx(brute_average_precision(scores, labels), rel=1e-12, abs=1e-12)
    assert pooled_auc == pytest.approx(brute_roc_auc(scores, labels), rel=1e-12, abs=1e-12)


@FAST
@given(pair=mask_pairs(), num_bins=st.sampled_from([1, 2, 3, 7, 100]))
def test_binned_values_are_exact_for_quantized_scores(pair, num_bins):
    pred, target = pair
    bins = quantized(pred, num_bins)
    torch.testing.assert_close(aupr(pred, target, num_bins=num_bins), aupr(bins / num_bins, target), **EXACT)
    torch.testing.assert_close(roc_auc(pred, target, num_bins=num_bins), roc_auc(bins / num_bins, target), **EXACT)
    histogram = score_histogram(pred, target, num_bins)
    assert histogram.dtype == torch.int64 and histogram.shape == (2, num_bins)
    assert int(histogram.sum()) == pred.numel() and int(histogram[1].sum()) == int(target.sum())
    torch.testing.assert_close(aupr_from_histogram(histogram), aupr(pred, target, per_image=False, num_bins=num_bins))


@FAST
@given(pair=mask_pairs(), num_bins=st.sampled_from([1, 2, 3, 5, 16]))
def test_binning_error_is_within_the_bound(pair, num_bins):
    pred, target = pair
    histogram = score_histogram(pred, target, num_bins)
    ap_error = (aupr_from_histogram(histogram) - aupr(pred, target, per_image=False)).abs()
    assert ap_error <= aupr_error_bound(histogram) + 1e-12
    auc_error = (roc_auc_from_histogram(histogram) - roc_auc(pred, target, per_image=False)).abs()
    assert auc_error <= roc_auc_error_bound(histogram) + 1e-12


def test_sklearn_average_precision_and_roc_auc():
    metrics = pytest.importorskip("sklearn.metrics")
    generator = torch.Generator().manual_seed(1)
    target = torch.rand(4, 40, 30, generator=generator) < 0.05
    # overlapping classes, and rounded to create ties
    pred = torch.sigmoid(torch.randn(4, 40, 30, generator=generator) + 2.0 * target).mul(200).round().div(200)
    for image_pred, image_target, ap, auc in zip(pred, target, aupr(pred, target), roc_auc(pred, target)):
        y, s = image_target.flatten().numpy(), image_pred.flatten().double().numpy()
        assert ap.item() == pytest.approx(metrics.average_precision_score(y, s), rel=1e-12)
        assert auc.item() == pytest.approx(metrics.roc_auc_score(y, s), rel=1e-12)
    y, s = target.flatten().numpy(), pred.flatten().double().numpy()
    assert aupr(pred, target, per_image=False).item() == pytest.approx(metrics.average_precision_score(y, s), rel=1e-12)
    for num_bins in (10, 64):
        q = quantized(pred, num_bins).flatten().numpy()
        binned_ap = aupr(pred, target, per_image=False, num_bins=num_bins).item()
        binned_auc = roc_auc(pred, target, per_image=False, num_bins=num_bins).item()
        assert binned_ap == pytest.approx(metrics.average_precision_score(y, q), rel=1e-12)
        assert binned_auc == pytest.approx(metrics.roc_auc_score(y, q), rel=1e-12)


def test_error_and_bound_shrink_as_bins_increase():
    # lesion-like data: 1% positives, overlapping score distributions
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(1, 200_000, generator=generator) < 0.01
    pred = torch.sigmoid(torch.randn(1, 200_000, generator=generator, dtype=torch.float64) + 2.0 * target - 1.0)
    exact = aupr(pred, target, per_image=False)
    errors, bounds = [], []
    for num_bins in (10, 100, 1000, 10_000):
        histogram = score_histogram(pred, target, num_bins)
        errors.append((aupr_from_histogram(histogram) - exact).abs().item())
        bounds.append(aupr_error_bound(histogram).item())
    assert all(error <= bound for error, bound in zip(errors, bounds))
    assert errors == sorted(errors, reverse=True) and bounds == sorted(bounds, reverse=True)
    assert bounds[-1] < 1e-3 and errors[-1] < 1e-3
    assert bounds[-1] < bounds[0] / 100, "the bound shrinks roughly like 1/num_bins on continuous scores"


@pytest.mark.parametrize("negative_first", [True, False], ids=["negative-above-positives", "negative-below-positives"])
def test_bound_holds_for_extreme_orderings_inside_a_bin(negative_first):
    # one bin [0.5, 1) holds 100 positives and 1 negative; the exact AP depends on where the negative sits
    positives = 0.51 + 0.39 * torch.arange(100, dtype=torch.float64) / 100
    negative = torch.tensor([0.95 if negative_first else 0.5], dtype=torch.float64)
    pred = torch.cat([negative, positives])[None]
    target = torch.cat([torch.zeros(1), torch.ones(100)])[None].bool()
    histogram = score_histogram(pred, target, num_bins=2)
    exact = aupr(pred, target, per_image=False).item()
    expected = sum(j / (j + 1) for j in range(1, 101)) / 100 if negative_first else 1.0
    assert exact == pytest.approx(expected, rel=1e-12)
    assert aupr_from_histogram(histogram).item() == pytest.approx(100 / 101, rel=1e-12)
    assert abs(exact - 100 / 101) <= aupr_error_bound(histogram).item()


def test_bound_is_zero_when_no_bin_mixes_classes():
    pred, target = torch.tensor([[0.05, 0.15, 0.95, 0.85]]), torch.tensor([[0, 0, 1, 1]])
    histogram = score_histogram(pred, target, num_bins=10)
    assert aupr_error_bound(histogram).item() == 0.0 and roc_auc_error_bound(histogram).item() == 0.0
    assert aupr_from_histogram(histogram).item() == 1.0


# --------------------------------------------------------------------------- accumulator


def batches(seed: int = 0):
    """Batches of different sizes and image sizes, one with a lesion-free image, one 3D."""
    generator = torch.Generator().manual_seed(seed)
    shapes = [(2, 1, 12, 10), (3, 1, 7, 9), (1, 1, 16, 16), (2, 1, 4, 5, 6)]
    out = []
    for shape in shapes:
        target = torch.rand(shape, generator=generator) < 0.1
        prob = torch.sigmoid(torch.randn(shape, generator=generator) + 2.5 * target - 1.0)
        out.append((prob, target))
    out[1][1][0] = False
    return out


def test_accumulator_matches_the_functional_api():
    data = batches()
    metrics = SegmentationMetrics(threshold=0.5, num_bins=256)
    for prob, target in data:
        metrics.update(prob, target)
    results = metrics.compute()

    flat_prob = torch.cat([prob.reshape(1, -1) for prob, _ in data], dim=1)
    flat_target = torch.cat([target.reshape(1, -1) for _, target in data], dim=1)
    for name, metric in dict(dice=dice, accuracy=accuracy, sensitivity=sensitivity, specificity=specificity).items():
        assert results[name] == pytest.approx(metric(flat_prob, flat_target).item(), rel=1e-12), name
    per_image_dice = torch.cat([dice(prob, target) for prob, target in data])
    assert results["dice_per_image_mean"] == pytest.approx(per_image_dice.mean().item(), rel=1e-12)
    assert results["aupr"] == pytest.approx(aupr(flat_prob, flat_target, num_bins=256).item(), rel=1e-12)
    assert results["roc_auc"] == pytest.approx(roc_auc(flat_prob, flat_target, num_bins=256).item(), rel=1e-12)
    assert abs(results["aupr"] - aupr(flat_prob, flat_target).item()) <= results["aupr_error_bound"]
    assert abs(results["roc_auc"] - roc_auc(flat_prob, flat_target).item()) <= results["roc_auc_error_bound"]
    assert results["num_images"] == 8 and results["num_pixels"] == flat_prob.numel()
    assert all(isinstance(value, float) and math.isfinite(value) for value in results.values())


def test_accumulator_state_does_not_grow_with_the_data():
    metrics = SegmentationMetrics(num_bins=64)
    for prob, target in batches() * 3:
        metrics.update(prob, target)
    state = [value for value in vars(metrics).values() if isinstance(value, torch.Tensor)]
    assert sum(tensor.numel() for tensor in state) == 4 + 1 + 1 + 2 * 64
    assert {tensor.dtype for tensor in state} <= {torch.int64, torch.float64}


def test_reset_forgets_everything():
    metrics = SegmentationMetrics(num_bins=32)
    data = batches()
    metrics.update(*data[0])
    metrics.reset()
    with pytest.raises(RuntimeError, match="update"):
        metrics.compute()
    for prob, target in data:
        metrics.update(prob, target)
    fresh = SegmentationMetrics(num_bins=32)
    for prob, target in data:
        fresh.update(prob, target)
    assert metrics.compute() == fresh.compute()


def test_accumulator_takes_masks_and_requires_grad_inputs():
    prob = torch.rand(2, 1, 6, 6, requires_grad=True)
    target = prob.detach() > 0.6
    metrics = SegmentationMetrics(threshold=0.6)
    metrics.update(prob, target)
    metrics.update(target, target)  # a hard mask is a valid prediction
    results = metrics.compute()
    assert results["dice"] == 1.0 and results["aupr"] == 1.0 and results["aupr_error_bound"] == 0.0


def test_accumulator_state_follows_the_device():
    metrics = SegmentationMetrics(device="cpu")
    metrics.update(*batches()[0])
    assert all(tensor.device.type == "cpu" for tensor in vars(metrics).values() if isinstance(tensor, torch.Tensor))
    assert "SegmentationMetrics(threshold=0.5" in repr(metrics)


@pytest.mark.cuda
def test_accumulator_on_cuda_matches_cpu():
    on_cpu, on_cuda = SegmentationMetrics(num_bins=128), SegmentationMetrics(num_bins=128)
    for prob, target in batches():
        on_cpu.update(prob, target)
        on_cuda.update(prob.cuda(), target.cuda())
    assert all(tensor.is_cuda for tensor in vars(on_cuda).values() if isinstance(tensor, torch.Tensor))
    cpu_results, cuda_results = on_cpu.compute(), on_cuda.compute()
    assert cpu_results.keys() == cuda_results.keys()
    for name in cpu_results:
        assert cuda_results[name] == pytest.approx(cpu_results[name], rel=1e-12), name


@pytest.mark.cuda
def test_functional_metrics_on_cuda():
    prob, target = batches()[0]
    for metric in (dice, accuracy, sensitivity, specificity, aupr, roc_auc):
        on_cuda = metric(prob.cuda(), target.cuda())
        assert on_cuda.is_cuda
        torch.testing.assert_close(on_cuda.cpu(), metric(prob, target))


# --------------------------------------------------------------------------- arguments that must raise


ILL_CASES = [
    pytest.param(
        dice,
        (torch.rand(2, 4), torch.zeros(2, 5)),
        {},
        ValueError,
        r"pred and target.*\(2, 4\).*\(2, 5\)",
        id="shape-mismatch",
    ),
    pytest.param(
        dice,
        (torch.rand(4), torch.zeros(4)),
        {},
        ValueError,
        r"pred.*\(B, \*spatial\).*\(4,\)",
        id="no-batch-dim",
    ),
    pytest.param(dice, (torch.rand(0, 4), torch.zeros(0, 4)), {}, ValueError, r"pred.*empty.*\(0, 4\)", id="empty"),
    pytest.param(
        dice,
        (torch.rand(1, 4), torch.zeros(1, 4)),
        dict(threshold=1.5),
        ValueError,
        r"threshold.*\[0, 1\].*1\.5",
        id="threshold-above-one",
    ),
    pytest.param(
        sensitivity,
        (torch.rand(1, 4), torch.zeros(1, 4)),
        dict(threshold=-0.1),
        ValueError,
        r"threshold.*-0\.1",
        id="threshold-negative",
    ),
    pytest.param(
        dice,
        (torch.rand(1, 4), torch.zeros(1, 4)),
        dict(threshold="0.5"),
        TypeError,
        r"threshold.*str",
        id="threshold-string",
    ),
    pytest.param(
        dice,
        (torch.rand(1, 4), torch.zeros(1, 4)),
        dict(threshold=True),
        TypeError,
        r"threshold.*bool",
        id="threshold-bool",
    ),
    pytest.param(
        dice,
        (torch.tensor([[0.2, -3.0]]), torch.zeros(1, 2)),
        {},
        ValueError,
        r"pred.*probabilities.*-3\.0.*sigmoid",
        id="logits",
    ),
    pytest.param(
        aupr,
        (torch.tensor([[0.2, float("nan")]]), torch.zeros(1, 2)),
        {},
        ValueError,
        r"pred.*probabilities.*nan",
        id="nan-prob",
    ),
    pytest.param(
        dice,
        (torch.rand(1, 2), torch.tensor([[0, 2]])),
        {},
        ValueError,
        r"target.*binary.*2",
        id="target-label-2",
    ),
    pytest.param(
        specificity,
        (torch.rand(1, 2), torch.tensor([[0.0, 0.5]])),
        {},
        ValueError,
        r"target.*binary.*0\.5",
        id="soft-target",
    ),
    pytest.param(
        dice,
        (torch.tensor([[0, 3]]), torch.zeros(1, 2)),
        {},
        ValueError,
        r"pred.*binary.*3",
        id="pred-label-3",
    ),
    pytest.param(dice, ([[0.1, 0.2]], torch.zeros(1, 2)), {}, TypeError, r"pred.*list", id="pred-not-tensor"),
    pytest.param(accuracy, (torch.rand(1, 2), None), {}, TypeError, r"target.*NoneType", id="target-not-tensor"),
    pytest.param(
        dice,
        (torch.rand(1, 2, dtype=torch.complex64), torch.zeros(1, 2)),
        {},
        TypeError,
        r"pred.*complex64",
        id="complex",
    ),
    pytest.param(
        aupr,
        (torch.rand(1, 4), torch.zeros(1, 4)),
        dict(num_bins=0),
        ValueError,
        r"num_bins.*0",
        id="zero-bins",
    ),
    pytest.param(
        roc_auc,
        (torch.rand(1, 4), torch.zeros(1, 4)),
        dict(num_bins=2.5),
        TypeError,
        r"num_bins.*2\.5",
        id="float-bins",
    ),
    pytest.param(
        aupr_from_histogram,
        (torch.zeros(3, 10, dtype=torch.int64),),
        {},
        ValueError,
        r"histogram.*\(3, 10\)",
        id="histogram-shape",
    ),
    pytest.param(SegmentationMetrics, (), dict(threshold=2), ValueError, r"threshold.*2", id="accumulator-threshold"),
    pytest.param(SegmentationMetrics, (), dict(num_bins=-5), ValueError, r"num_bins.*-5", id="accumulator-bins"),
    pytest.param(
        lambda *a: SegmentationMetrics().update(*a),
        (torch.rand(2, 3), torch.zeros(3, 2)),
        {},
        ValueError,
        r"prob and target.*\(2, 3\).*\(3, 2\)",
        id="update-shape",
    ),
    pytest.param(
        lambda *a: SegmentationMetrics().update(*a),
        (torch.randn(2, 3) * 5, torch.zeros(2, 3)),
        {},
        ValueError,
        r"prob.*probabilities",
        id="update-logits",
    ),
]


@pytest.mark.parametrize("function, args, kwargs, error, message", ILL_CASES)
def test_ill_arguments_raise_naming_the_argument(function, args, kwargs, error, message):
    with pytest.raises(error, match=message):
        function(*args, **kwargs)


@pytest.mark.parametrize(
    "histogram, error, message",
    [
        (torch.tensor([[5, -3], [-2, 4]]), ValueError, r"counts >= 0.*-3"),
        (torch.tensor([[1.5, 2.0], [3.0, 1.0]]), TypeError, r"integer counts.*float32"),
        (torch.zeros(2, 0, dtype=torch.long), ValueError, r"at least one bin"),
    ],
)
def test_histogram_functions_reject_what_score_histogram_cannot_return(histogram, error, message):
    for function in (aupr_from_histogram, roc_auc_from_histogram, aupr_error_bound, roc_auc_error_bound):
        with pytest.raises(error, match=message):
            function(histogram)


@pytest.mark.parametrize("per_image", [None, "no", 1])
def test_per_image_must_be_a_bool(per_image):
    pred, target = torch.tensor([[0.9, 0.1]]), torch.tensor([[1, 0]])
    for metric in (dice, aupr):
        with pytest.raises(TypeError, match=r"per_image must be True or False"):
            metric(pred, target, per_image=per_image)
