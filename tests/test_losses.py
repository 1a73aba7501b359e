"""Generalized Dice loss (Sudre et al., DLMIA 2017), the training loss of GANet (Ye et al., SPIE 2020, sec. 3.1).

References used here: hand-computed cases, a float64 loop written from Sudre's formula and the
documented empty-class conventions, and MONAI's GeneralizedDiceLoss where the conventions agree.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from group_attention.losses import GeneralizedDiceLoss, class_weights, generalized_dice_loss

FAST = settings(max_examples=40, deadline=None)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def reference_loss(probabilities: torch.Tensor, truth: torch.Tensor, smooth: float, exponent: int = 2) -> torch.Tensor:
    """Per-image loss in float64, one loop per image and class, from Sudre's formula and the module's conventions.

    Sudre's weights are 1/V^exponent; an absent class takes the largest finite weight (MONAI/NiftyNet);
    weights are divided by that largest weight (smooth is in those units); an image without any present
    class scores its mean predicted probability.
    """
    losses = []
    for image_probabilities, image_truth in zip(probabilities.double(), truth.double()):
        volumes = [float(class_truth.sum()) for class_truth in image_truth]
        raw_weights = [volume**-exponent if volume > 0 else None for volume in volumes]
        finite = [weight for weight in raw_weights if weight is not None]
        if not finite:
            losses.append(float(image_probabilities.mean()))
            continue
        largest = max(finite)
        weights = [(largest if weight is None else weight) / largest for weight in raw_weights]
        numerator, denominator = smooth, smooth
        for weight, p, g in zip(weights, image_probabilities, image_truth):
            numerator += 2 * weight * float((p * g).sum())
            denominator += weight * float(p.sum() + g.sum())
        losses.append(1 - numerator / denominator)
    return torch.tensor(losses, dtype=torch.float64)


def random_target(
    mode: str, batch: int, channels: int, spatial: tuple[int, ...], *, empty_images: tuple[int, ...] = ()
) -> torch.Tensor:
    """Class indices (multiclass) or 0/1 masks (binary, multilabel) with sparse lesions and some empty images."""
    if mode == "multiclass":
        # background-heavy, like fundus images: class c > 0 on ~10% of pixels, some classes absent
        target = torch.where(torch.rand(batch, *spatial) < 0.25, torch.randint(1, channels, (batch, *spatial)), 0)
        target[:, ..., 0] = 0
        for image in empty_images:
            target[image] = 0
        return target
    target = (torch.rand(batch, channels, *spatial) < 0.2).float()
    for image in empty_images:
        target[image] = 0
    return target


def as_one_hot(target: torch.Tensor, mode: str, channels: int) -> torch.Tensor:
    if mode == "multiclass":
        return torch.nn.functional.one_hot(target, channels).movedim(-1, 1).double()
    return target.double()


# --------------------------------------------------------------------------- the formula


@pytest.mark.parametrize("spatial", [(6, 5), (3, 4, 5)], ids=["2d", "3d"])
@pytest.mark.parametrize(
    "mode, channels, include_background",
    [
        ("multiclass", 2, True),
        ("multiclass", 4, True),
        ("multiclass", 4, False),
        ("binary", 1, True),
        ("multilabel", 3, True),
        ("multilabel", 3, False),
    ],
)
@pytest.mark.parametrize("weight_type, exponent", [("square", 2), ("simple", 1), ("uniform", 0)])
def test_matches_float64_reference(spatial, mode, channels, include_background, weight_type, exponent):
    logits = 3 * torch.randn(3, channels, *spatial)
    target = random_target(mode, 3, channels, spatial, empty_images=(1,))
    loss_fn = GeneralizedDiceLoss(
        mode, include_background=include_background, reduction="none", smooth=1e-3, weight_type=weight_type
    )
    loss = loss_fn(logits, target)

    probabilities = torch.softmax(logits.double(), 1) if mode == "multiclass" else torch.sigmoid(logits.double())
    truth = as_one_hot(target, mode, channels)
    if not include_background:
        probabilities, truth = probabilities[:, 1:], truth[:, 1:]
    expected = reference_loss(probabilities, truth, smooth=1e-3, exponent=exponent)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spatial", [(6, 5), (3, 4, 5)], ids=["2d", "3d"])
@pytest.mark.parametrize(
    "mode, channels, include_background",
    [("multiclass", 2, True), ("multiclass", 4, False), ("binary", 1, True), ("multilabel", 3, True)],
)
@pytest.mark.parametrize("weight_type, exponent", [("square", 2), ("uniform", 0)])
def test_batch_pools_the_pixels_of_the_batch(spatial, mode, channels, include_background, weight_type, exponent):
    """``batch=True`` is the float64 reference applied to the batch laid side by side as one image."""
    logits = 3 * torch.randn(3, channels, *spatial)
    target = random_target(mode, 3, channels, spatial, empty_images=(1,))
    loss = GeneralizedDiceLoss(
        mode, include_background=include_background, reduction="none", smooth=1e-3, weight_type=weight_type, batch=True
    )(logits, target)

    probabilities = torch.softmax(logits.double(), 1) if mode == "multiclass" else torch.sigmoid(logits.double())
    truth = as_one_hot(target, mode, channels)
    if not include_background:
        probabilities, truth = probabilities[:, 1:], truth[:, 1:]
    side_by_side = [torch.cat(list(t), dim=-1)[None] for t in (probabilities, truth)]  # (1, C, ..., 3 * W)
    expected = reference_loss(*side_by_side, smooth=1e-3, exponent=exponent)
    assert loss.shape == (1,)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    for reduction in ("mean", "sum"):
        pooled = generalized_dice_loss(
            logits,
            target,
            mode,
            include_background=include_background,
            smooth=1e-3,
            weight_type=weight_type,
            reduction=reduction,
            batch=True,
        )
        torch.testing.assert_close(pooled.double(), expected[0], rtol=1e-5, atol=1e-6)


def test_batch_of_empty_images_scores_their_mean_probability():
    logits = torch.randn(3, 1, 4, 5, dtype=torch.float64)
    loss = GeneralizedDiceLoss("binary", batch=True)(logits, torch.zeros(3, 1, 4, 5))
    torch.testing.assert_close(loss, torch.sigmoid(logits).mean())


def test_batch_weighs_a_false_positive_the_same_in_every_image():
    """Why patches want ``batch=True``. Two images, image 0 with a 4-pixel lesion, image 1 with none, and a model
    that already finds the lesion (p = 0.9 on it, 0.01 elsewhere). Per image, image 1's loss is its mean lesion
    probability, so a false positive there moves the loss by 1/N (N = 64 pixels), while one beside the lesion moves
    it by about 2 TP / (V + P)^2, some 7 times more; pooled over the batch, both are pixels of one image."""
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[0, :2, :2] = 1
    lesion_logit = torch.full((2, 8, 8), logit(0.01), dtype=torch.float64)
    lesion_logit[0, :2, :2] = logit(0.9)
    logits = torch.stack([torch.zeros_like(lesion_logit), lesion_logit], dim=1).requires_grad_()

    def false_positive_gradients(batch: bool) -> tuple[float, float]:
        logits.grad = None
        GeneralizedDiceLoss(smooth=0.0, batch=batch, reduction="sum")(logits, target).backward()
        return float(logits.grad[0, 1, 7, 7]), float(logits.grad[1, 1, 7, 7])  # background pixels, lesion logit

    beside, alone = false_positive_gradients(batch=True)
    assert beside == pytest.approx(alone, rel=1e-12) and beside > 0
    beside, alone = false_positive_gradients(batch=False)
    assert alone == pytest.approx(0.01 * 0.99 / 64, rel=1e-9)  # d(mean p)/dz = p (1 - p) / N
    assert beside > 5 * alone


def test_hand_computed_binary():
    # p = (0.8, 0.6, 0.2, 0.1), g = (1, 1, 0, 0): 1 - 2 * 1.4 / (1.7 + 2) = 9/37
    logits = torch.tensor([logit(0.8), logit(0.6), logit(0.2), logit(0.1)], dtype=torch.float64).view(1, 1, 2, 2)
    target = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 2, 2)
    loss = GeneralizedDiceLoss("binary", smooth=0.0)(logits, target)
    assert loss.item() == pytest.approx(9 / 37, rel=1e-12)


def test_hand_computed_two_classes_with_sudre_weights():
    # lesion p1 = (0.8, 0.6, 0.2, 0.1), one lesion pixel: volumes 3 (background) and 1 (lesion),
    # weights 1/9 and 1; numerator 2 (2.1/9 + 0.8) = 18.6/9, denominator (2.3 + 3)/9 + (1.7 + 1) = 29.6/9
    lesion = torch.tensor([logit(0.8), logit(0.6), logit(0.2), logit(0.1)], dtype=torch.float64)
    logits = torch.stack([torch.zeros(4, dtype=torch.float64), lesion]).view(1, 2, 2, 2)
    target = torch.tensor([1, 0, 0, 0]).view(1, 2, 2)
    loss = GeneralizedDiceLoss("multiclass", smooth=0.0)(logits, target)
    assert loss.item() == pytest.approx(1 - 18.6 / 29.6, rel=1e-12)


def test_perfect_prediction_gives_zero():
    target = random_target("multiclass", 2, 3, (8, 8))
    logits = 50.0 * torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float()
    assert GeneralizedDiceLoss("multiclass")(logits, target).item() == pytest.approx(0.0, abs=1e-6)


def test_class_weights_are_inverse_squared_volumes_up_to_a_constant():
    volumes = torch.tensor([[400.0, 20.0, 5.0, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    weights = class_weights(volumes)
    sudre = 1 / volumes[0, :3] ** 2
    torch.testing.assert_close(weights[0, :3] / weights[0, 0], sudre / sudre[0])
    assert weights[0, 2] == 1.0, "the rarest present class weighs 1"
    assert weights[0, 3] == 1.0, "an absent class takes the largest finite weight"
    assert torch.equal(weights[1], torch.ones(4, dtype=torch.float64)), "no present class: all ones"
    assert torch.equal(class_weights(volumes, "uniform")[0], torch.ones(4, dtype=torch.float64))


# --------------------------------------------------------------------------- empty classes and images


def test_lesion_free_image_with_background_scores_mean_lesion_probability():
    # both classes weigh 1/N^2 (absent lesion takes the background's weight): loss = 2 sum p1 / (2N)
    logits = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    loss = GeneralizedDiceLoss("multiclass", smooth=0.0)(logits, torch.zeros(1, 8, 8, dtype=torch.long))
    assert loss.item() == pytest.approx(torch.softmax(logits, 1)[:, 1].mean().item(), rel=1e-12)


@pytest.mark.parametrize("mode, channels", [("binary", 1), ("multilabel", 3)])
def test_image_without_any_class_scores_mean_probability_with_gradient(mode, channels):
    logits = torch.randn(2, channels, 8, 8, requires_grad=True)
    loss = GeneralizedDiceLoss(mode, reduction="none")(logits, torch.zeros(2, channels, 8, 8))
    torch.testing.assert_close(loss, torch.sigmoid(logits).mean(dim=(1, 2, 3)))
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad > 0).all(), "false positives must be pushed down"


def test_multiclass_without_background_on_lesion_free_image():
    logits = torch.randn(1, 3, 5, 5)
    loss = GeneralizedDiceLoss("multiclass", include_background=False)(logits, torch.zeros(1, 5, 5, dtype=torch.long))
    torch.testing.assert_close(loss, torch.softmax(logits, 1)[:, 1:].mean())


@FAST
@given(
    mode=st.sampled_from(["multiclass", "binary", "multilabel"]),
    batch=st.integers(1, 3),
    spatial=st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple),
    fill=st.sampled_from(["empty", "full", "random", "single_pixel"]),
    logit_scale=st.sampled_from([0.0, 1.0, 30.0]),
    include_background=st.booleans(),
    smooth=st.sampled_from([0.0, 1e-5, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_finite_loss_and_gradients_for_any_target(
    mode, batch, spatial, fill, logit_scale, include_background, smooth, seed
):
    generator = torch.Generator().manual_seed(seed)
    channels = {"multiclass": 3, "binary": 1, "multilabel": 2}[mode]
    include_background = include_background or mode == "binary"
    logits = (logit_scale * torch.randn(batch, channels, *spatial, generator=generator)).requires_grad_()
    foreground = {
        "empty": torch.zeros(batch, *spatial, dtype=torch.bool),
        "full": torch.ones(batch, *spatial, dtype=torch.bool),
        "random": torch.rand(batch, *spatial, generator=generator) < 0.3,
        "single_pixel": torch.zeros(batch, *spatial, dtype=torch.bool).index_fill_(-1, torch.tensor([0]), True),
    }[fill]
    if mode == "multiclass":
        target = foreground.long() * 2  # class 1 always absent: an empty class next to present ones
    else:
        target = foreground[:, None].expand(batch, channels, *spatial).float()

    loss_fn = GeneralizedDiceLoss(mode, include_background=include_background, smooth=smooth, reduction="none")
    loss = loss_fn(logits, target)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and ((loss >= -1e-6) & (loss <= 1 + 1e-6)).all()
    assert torch.isfinite(logits.grad).all()


def test_gradcheck_with_an_absent_class():
    logits = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[[0, 2, 2], [0, 0, 2], [0, 0, 0]], [[0, 0, 0], [0, 0, 0], [0, 0, 0]]])
    assert torch.autograd.gradcheck(lambda x: generalized_dice_loss(x, target, reduction="sum"), (logits,))
    masks = torch.zeros(2, 1, 3, 3, dtype=torch.float64)
    masks[0, 0, 1, 1] = 1
    binary_logits = logits[:, :1].detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: generalized_dice_loss(x, masks, "binary"), (binary_logits,))


# --------------------------------------------------------------------------- MONAI


def monai_loss(logits, target_one_hot, mode, include_background, smooth_nr=0.0, smooth_dr=0.0):
    monai_losses = pytest.importorskip("monai.losses")
    monai_fn = monai_losses.GeneralizedDiceLoss(
        include_background=include_background,
        softmax=mode == "multiclass",
        sigmoid=mode != "multiclass",
        reduction="none",
        smooth_nr=smooth_nr,
        smooth_dr=smooth_dr,
    )
    return monai_fn(logits, target_one_hot).flatten()


@pytest.mark.parametrize(
    "mode, channels, include_background",
    [
        ("multiclass", 2, True),
        ("multiclass", 5, True),
        ("multiclass", 5, False),
        ("binary", 1, True),
        ("multilabel", 3, True),
    ],
)
@pytest.mark.parametrize("spatial", [(16, 12), (6, 5, 4)], ids=["2d", "3d"])
def test_agrees_with_monai_when_some_class_is_present(mode, channels, include_background, spatial):
    logits = 2 * torch.randn(4, channels, *spatial, dtype=torch.float64)
    target = random_target(mode, 4, channels, spatial)
    if mode == "multiclass":
        target[0][target[0] == channels - 1] = 0  # an absent class next to present ones
    elif mode == "multilabel":
        target[0, 1] = 0
    one_hot = as_one_hot(target, mode, channels)
    volumes = (one_hot if include_background else one_hot[:, 1:]).flatten(2).sum(-1)
    assert (volumes > 0).any(1).all(), "every image must have a present class here"
    assert mode == "binary" or (volumes[0] == 0).any(), "image 0 must have an absent class"

    loss_fn = GeneralizedDiceLoss(mode, include_background=include_background, reduction="none", smooth=0.0)
    ours = loss_fn(logits, target)
    # MONAI casts its weights to float32, hence the tolerance
    torch.testing.assert_close(ours, monai_loss(logits, one_hot, mode, include_background), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode, channels", [("multiclass", 3), ("binary", 1), ("multilabel", 2)])
def test_agrees_with_monai_over_the_batch(mode, channels):
    monai_losses = pytest.importorskip("monai.losses")
    logits = 2 * torch.randn(4, channels, 10, 9, dtype=torch.float64)
    target = random_target(mode, 4, channels, (10, 9), empty_images=(2,))
    theirs = monai_losses.GeneralizedDiceLoss(
        softmax=mode == "multiclass", sigmoid=mode != "multiclass", batch=True, smooth_nr=0.0, smooth_dr=0.0
    )(logits, as_one_hot(target, mode, channels))
    ours = GeneralizedDiceLoss(mode, smooth=0.0, batch=True)(logits, target)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)


def test_monai_differs_on_images_without_any_class():
    # MONAI: all weights infinite -> replaced by 0 -> loss 1 - smooth_nr/smooth_dr = 0 whatever the prediction
    logits = torch.full((1, 1, 8, 8), 3.0, requires_grad=True)
    empty = torch.zeros(1, 1, 8, 8)
    theirs = monai_loss(logits, empty, "binary", True, smooth_nr=1e-5, smooth_dr=1e-5)
    theirs.sum().backward()
    assert theirs.item() == pytest.approx(0.0) and torch.count_nonzero(logits.grad) == 0

    logits.grad = None
    ours = GeneralizedDiceLoss("binary")(logits, empty)
    ours.backward()
    assert ours.item() == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    assert (logits.grad > 0).all()


def test_smooth_stays_negligible_on_large_volumes():
    # half of a 100^3 volume is foreground and nothing is predicted: the Dice loss must be ~1
    target = torch.zeros(1, 1, 100, 100, 100)
    target[..., :50] = 1
    logits = torch.full_like(target, -30.0)
    assert GeneralizedDiceLoss("binary")(logits, target).item() == pytest.approx(1.0, abs=1e-6)
    # MONAI's raw 1/V^2 weights make its sums ~1e-6, so smooth=1e-5 dominates (documented difference)
    assert monai_loss(logits, target, "binary", True, smooth_nr=1e-5, smooth_dr=1e-5).item() < 0.5


# --------------------------------------------------------------------------- targets, reductions, dtypes


def test_target_forms_give_the_same_loss():
    logits = torch.randn(2, 3, 6, 6)
    indices = random_target("multiclass", 2, 3, (6, 6))
    loss_fn = GeneralizedDiceLoss("multiclass", reduction="none")
    by_index = loss_fn(logits, indices)
    torch.testing.assert_close(loss_fn(logits, indices[:, None]), by_index)
    torch.testing.assert_close(loss_fn(logits, indices.int()), by_index)
    torch.testing.assert_close(loss_fn(logits, as_one_hot(indices, "multiclass", 3).float()), by_index)

    masks = random_target("binary", 2, 1, (6, 6))
    binary = GeneralizedDiceLoss("binary", reduction="none")
    expected = binary(logits[:, :1], masks)
    for target in (masks[:, 0], masks.bool(), masks.long()):
        torch.testing.assert_close(binary(logits[:, :1], target), expected)


def test_reductions():
    logits, target = torch.randn(3, 2, 5, 5), random_target("multiclass", 3, 2, (5, 5))
    per_image = GeneralizedDiceLoss(reduction="none")(logits, target)
    assert per_image.shape == (3,)
    torch.testing.assert_close(GeneralizedDiceLoss(reduction="mean")(logits, target), per_image.mean())
    torch.testing.assert_close(GeneralizedDiceLoss(reduction="sum")(logits, target), per_image.sum())


def test_half_precision_logits_are_computed_in_float32():
    logits, target = torch.randn(2, 2, 16, 16), random_target("multiclass", 2, 2, (16, 16))
    for low_precision in (torch.float16, torch.bfloat16):
        reduced = logits.to(low_precision)
        loss = GeneralizedDiceLoss()(reduced, target)
        assert loss.dtype == torch.float32
        torch.testing.assert_close(loss, GeneralizedDiceLoss()(reduced.float(), target))


def test_half_precision_on_a_fundus_sized_image():
    # GANet's 512 x 384 input: the background volume (196608) is beyond float16's largest value (65504)
    logits, target = torch.randn(1, 2, 512, 384), torch.zeros(1, 512, 384, dtype=torch.long)
    target[0, 100:140, 200:260] = 1
    loss = GeneralizedDiceLoss()(logits.half(), target)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, GeneralizedDiceLoss()(logits.half().float(), target))


def test_autocast_safe():
    model = torch.nn.Conv2d(3, 2, 3, padding=1)
    images, target = torch.randn(2, 3, 32, 32), torch.zeros(2, 32, 32, dtype=torch.long)
    target[0, 4:6, 4:6] = 1  # a tiny lesion in one image, none in the other
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(images)
        loss = GeneralizedDiceLoss()(logits, target)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_float64_logits_stay_float64():
    loss = GeneralizedDiceLoss()(torch.randn(1, 2, 4, 4, dtype=torch.float64), torch.zeros(1, 4, 4, dtype=torch.long))
    assert loss.dtype == torch.float64


# --------------------------------------------------------------------------- training


def test_adam_drives_the_loss_down_on_ganets_setting():
    # GANet: softmax over background/lesion, integer 0/1 targets, lesion-free images in the batch
    target = torch.zeros(2, 16, 16, dtype=torch.long)
    target[0, 3:7, 5:9] = 1
    logits = torch.zeros(2, 2, 16, 16, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.1)
    loss_fn = GeneralizedDiceLoss("multiclass")
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = loss_fn(logits, target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 < 0.4 < losses[0]
    lesion_probability = torch.softmax(logits.detach(), 1)[:, 1]
    assert lesion_probability[1].max() < 0.1, "the lesion-free image must lose its false positives"
    assert lesion_probability[0][target[0] == 1].min() > 0.9


def test_adam_trains_a_binary_model_with_lesion_free_images():
    target = torch.zeros(2, 1, 12, 12)
    target[0, 0, 2:5, 2:5] = 1
    logits = torch.zeros(2, 1, 12, 12, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.1)
    for _ in range(40):
        optimizer.zero_grad()
        GeneralizedDiceLoss("binary")(logits, target).backward()
        optimizer.step()
    assert torch.sigmoid(logits.detach()[1]).max() < 0.1


def test_repr_tells_the_configuration():
    text = repr(GeneralizedDiceLoss("multilabel", include_background=False, reduction="sum", batch=True))
    assert "mode='multilabel'" in text and "include_background=False" in text and "reduction='sum'" in text
    assert "batch=True" in text


# --------------------------------------------------------------------------- arguments that must raise


def _inputs(logits_shape, target, logits_dtype=torch.float32):
    return lambda: (torch.zeros(logits_shape, dtype=logits_dtype), target() if callable(target) else target)


ILL_CASES = [
    pytest.param(dict(mode="softmax"), None, ValueError, r"mode.*multiclass.*'softmax'", id="unknown-mode"),
    pytest.param(dict(reduction="avg"), None, ValueError, r"reduction.*'avg'", id="unknown-reduction"),
    pytest.param(dict(smooth=-1.0), None, ValueError, r"smooth.*-1\.0", id="negative-smooth"),
    pytest.param(dict(smooth=float("nan")), None, ValueError, r"smooth.*nan", id="nan-smooth"),
    pytest.param(dict(weight_type="cubic"), None, ValueError, r"weight_type.*square.*'cubic'", id="unknown-weight"),
    pytest.param(dict(batch="yes"), None, TypeError, r"batch must be True or False.*'yes'", id="batch-not-bool"),
    pytest.param(
        dict(mode="binary", include_background=False),
        None,
        ValueError,
        r"include_background",
        id="binary-no-background",
    ),
    pytest.param(
        dict(mode="binary"),
        _inputs((2, 2, 4, 4), torch.zeros(2, 4, 4)),
        ValueError,
        r"logits.*1 channel.*got 2",
        id="binary-two-channels",
    ),
    pytest.param(
        dict(),
        _inputs((2, 1, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long)),
        ValueError,
        r"logits.*at least 2 channels.*got 1",
        id="multiclass-one-channel",
    ),
    pytest.param(
        dict(),
        _inputs((2, 2), torch.zeros(2, dtype=torch.long)),
        ValueError,
        r"logits.*\(2, 2\)",
        id="no-spatial-dim",
    ),
    pytest.param(
        dict(),
        _inputs((2, 2, 4), torch.zeros(2, 4, dtype=torch.long), torch.int64),
        TypeError,
        r"logits.*int64",
        id="integer-logits",
    ),
    pytest.param(dict(), lambda: ([[0.0]], torch.zeros(1)), TypeError, r"logits.*list", id="logits-not-tensor"),
    pytest.param(
        dict(),
        lambda: (torch.zeros(1, 2, 4), [0, 1, 0, 1]),
        TypeError,
        r"target.*list",
        id="target-not-tensor",
    ),
    pytest.param(
        dict(),
        _inputs((2, 2, 4, 4), torch.zeros(2, 5, 4, dtype=torch.long)),
        ValueError,
        r"target.*\(2, 5, 4\).*logits",
        id="target-shape",
    ),
    pytest.param(
        dict(),
        _inputs((2, 2, 4, 4), torch.zeros(2, 4, 4)),
        TypeError,
        r"target.*indices.*float32",
        id="float-indices",
    ),
    pytest.param(
        dict(),
        _inputs((2, 2, 4, 4), torch.full((2, 4, 4), 2)),
        ValueError,
        r"target.*\[2, 2\].*0\.\.1",
        id="index-too-large",
    ),
    pytest.param(
        dict(),
        _inputs((2, 3, 4, 4), torch.full((2, 1, 4, 4), -1)),
        ValueError,
        r"target.*\[-1, -1\]",
        id="negative-index",
    ),
    pytest.param(
        dict(),
        _inputs((2, 2, 4, 4), torch.full((2, 2, 4, 4), 2.0)),
        ValueError,
        r"target.*2\.0.*\[0, 1\]",
        id="one-hot-above-one",
    ),
    pytest.param(
        dict(mode="multilabel"),
        _inputs((2, 2, 4, 4), torch.zeros(2, 4, 4)),
        ValueError,
        r"target.*\(2, 4, 4\).*\(2, 2, 4, 4\)",
        id="multilabel-index-shape",
    ),
    pytest.param(
        dict(mode="binary"),
        _inputs((1, 1, 2, 2), torch.tensor([[[float("nan"), 0.0], [1.0, 0.0]]])),
        ValueError,
        r"target.*nan",
        id="nan-target",
    ),
    pytest.param(dict(include_background=None), None, TypeError, r"include_background.*None", id="background-none"),
    pytest.param(dict(validate_args="no"), None, TypeError, r"validate_args.*'no'", id="validate-string"),
    pytest.param(dict(smooth="1e-5"), None, TypeError, r"smooth.*'1e-5'.*str", id="smooth-string"),
    pytest.param(dict(weight_type=["square"]), None, ValueError, r"weight_type.*\['square'\]", id="weight-list"),
    pytest.param(
        dict(),
        _inputs((2, 2, 0), torch.zeros(2, 0, dtype=torch.long)),
        ValueError,
        r"logits.*empty.*\(2, 2, 0\)",
        id="empty-logits",
    ),
    pytest.param(
        dict(mode="binary"),
        _inputs((1, 1, 2, 2), torch.tensor([[[0, 255], [0, 0]]])),
        ValueError,
        r"\[0, 255\].*target > 0",
        id="binary-0-255-mask",
    ),
    pytest.param(
        dict(mode="multilabel"),
        _inputs((1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.complex64)),
        TypeError,
        r"target.*complex64",
        id="complex-target",
    ),
]


def test_smooth_accepts_any_real_number():
    import numpy as np

    logits, target = torch.zeros(1, 2, 3), torch.tensor([[0, 1, 1]])
    expected = GeneralizedDiceLoss(smooth=1e-3)(logits, target)
    torch.testing.assert_close(GeneralizedDiceLoss(smooth=np.float32(1e-3))(logits, target), expected)


def test_class_weights_of_integer_volumes():
    """Volumes summed from an integer mask: as the same volumes in float, (V_min / V_c)^2 and 1 for absent."""
    volumes = torch.tensor([[400, 20, 0], [5, 5, 10]])
    expected = torch.tensor([[(20 / 400) ** 2, 1.0, 1.0], [1.0, 1.0, 0.25]])
    torch.testing.assert_close(class_weights(volumes), expected)


@pytest.mark.parametrize("init_kwargs, make_inputs, error, message", ILL_CASES)
def test_ill_arguments_raise_naming_the_argument(init_kwargs, make_inputs, error, message):
    if make_inputs is None:
        with pytest.raises(error, match=message):
            GeneralizedDiceLoss(**init_kwargs)
        return
    loss_fn = GeneralizedDiceLoss(**init_kwargs)
    logits, target = make_inputs()
    with pytest.raises(error, match=message):
        loss_fn(logits, target)


@pytest.mark.cuda
def test_autocast_float16_on_cuda():
    model = torch.nn.Conv2d(3, 2, 3, padding=1).cuda()
    images = torch.randn(2, 3, 512, 384, device="cuda")
    target = torch.zeros(2, 512, 384, dtype=torch.long, device="cuda")
    target[0, 100:104, 200:204] = 1  # a 16-pixel lesion next to a lesion-free image
    with torch.autocast("cuda", dtype=torch.float16):
        logits = model(images)
        loss = GeneralizedDiceLoss()(logits, target)
    assert logits.dtype == torch.float16 and loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())
    reference = GeneralizedDiceLoss()(logits.detach().float().cpu(), target.cpu())
    torch.testing.assert_close(loss.detach().cpu(), reference, rtol=1e-5, atol=1e-6)
