"""Beyond the 2020 protocol (issue 26): one model for several lesions, training on patches at a share of the native
resolution with lesion-aware sampling, sliding-window evaluation at the original resolution, learning curves."""

from __future__ import annotations

import json
import math

import engine_runs
import numpy as np
import pytest
import torch
from idrid_trees import needs_real_idrid
from sklearn.metrics import average_precision_score

from group_attention.fundus.data.preprocess import Box
from group_attention.fundus.engine import train as train_module
from group_attention.fundus.engine.curves import TrainingMonitor, curves_picture, tensorboard_writer
from group_attention.fundus.engine.loss import LesionLoss
from group_attention.fundus.engine.patches import PatchSampler, ScaledArrays
from group_attention.fundus.engine.windows import evaluate_windows, window_probabilities
from group_attention.models import UNet


def scaled_arrays(images, masks, boxes=None, dataset=None, scale=1.0) -> ScaledArrays:
    ids = [f"img{k}" for k in range(len(images))]
    boxes = boxes or [Box(0, 0, image.shape[1], image.shape[2]) for image in images]
    return ScaledArrays(ids, list(images), list(masks), boxes, scale, dataset)


# ----------------------------------------------------------------------------------------------- the loss per lesion


def _soft_dice_two_class(lesion_probability, mask, smooth=1e-5, pooled=False, exponent=0):
    """Soft Dice over [background, lesion] with class weights (V_min / V_c)^exponent (both classes present),
    written out from the probabilities: each image's, then their mean; or with ``pooled`` the Dice of every pixel
    of the batch at once."""
    probability = torch.stack([1 - lesion_probability, lesion_probability], 1).double()
    truth = torch.stack([mask == 0, mask == 1], 1).double()
    if pooled:  # (B, 2, H, W) -> (1, 2, B * H * W)
        probability, truth = (t.transpose(0, 1).reshape(1, 2, -1) for t in (probability, truth))
    probability, truth = probability.flatten(2), truth.flatten(2)
    volumes = truth.sum(2)
    assert (volumes > 0).all(), "the reference needs both classes present"
    weights = (volumes.amin(1, keepdim=True) / volumes) ** exponent
    numerator = 2 * (weights * (probability * truth).sum(2)).sum(1) + smooth
    denominator = (weights * (probability + truth).sum(2)).sum(1) + smooth
    return (1 - numerator / denominator).mean()


def test_a_joint_model_s_loss_is_the_mean_of_each_lesion_s_two_class_loss():
    torch.manual_seed(0)
    logits = torch.randn(3, 2, 8, 10)
    masks = (torch.rand(3, 2, 8, 10) < 0.3).float()
    loss = LesionLoss("sigmoid", weight_type="uniform")(logits, masks)
    expected = (
        _soft_dice_two_class(torch.sigmoid(logits[:, 0]), masks[:, 0])
        + _soft_dice_two_class(torch.sigmoid(logits[:, 1]), masks[:, 1])
    ) / 2
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)


def test_dice_over_the_batch_pools_every_patch_s_pixels_per_lesion():
    torch.manual_seed(0)
    logits = torch.randn(3, 2, 8, 10)
    masks = (torch.rand(3, 2, 8, 10) < 0.3).float()
    masks[1] = 0  # a patch without any lesion
    loss = LesionLoss("sigmoid", dice_over="batch")(logits, masks)  # the generalized Dice: weights 1 / V^2
    expected = (
        sum(_soft_dice_two_class(torch.sigmoid(logits[:, k]), masks[:, k], pooled=True, exponent=2) for k in (0, 1)) / 2
    )
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    per_image = LesionLoss("sigmoid")(logits, masks)
    assert abs(per_image.item() - loss.item()) > 1e-2  # the two are different losses here
    with pytest.raises(ValueError, match=r"dice_over must be one of \['image', 'batch'\], got 'pixel'"):
        LesionLoss("sigmoid", dice_over="pixel")


def test_patches_default_to_the_batch_s_dice_and_whole_images_to_each_image_s():
    patches = engine_runs.tiny_config(scale=0.5, patch=(32, 32))
    assert patches.dice_over == "batch" and train_module.make_loss(patches).dice_over == "batch"
    assert engine_runs.tiny_config().dice_over == "image"
    per_image_patches = engine_runs.tiny_config(scale=0.5, patch=(32, 32), dice_over="image")
    assert train_module.make_loss(per_image_patches).dice_over == "image"
    assert per_image_patches.fingerprint() != patches.fingerprint()
    assert engine_runs.tiny_config(dice_over="image").fingerprint() == engine_runs.tiny_config().fingerprint()
    assert engine_runs.tiny_config(dice_over="batch").fingerprint() != engine_runs.tiny_config().fingerprint()


def test_a_patch_run_of_the_per_image_dice_is_not_resumed_silently_with_the_batch_s(tmp_path):
    """A patch run trained before patches defaulted to the batch's Dice (its config.json has no dice_over) is
    refused by the new default, naming the setting; given --dice-over image it resumes."""
    from group_attention.fundus.engine.experiment import check_resumable

    before = engine_runs.tiny_config(scale=0.5, patch=(32, 32), dice_over="image")
    settings = before.to_dict()
    del settings["dice_over"]
    finished = tmp_path / "runs" / "ganet" / "EX" / "fold1" / "metrics.json"
    finished.parent.mkdir(parents=True)
    finished.write_text("{}")
    (tmp_path / "config.json").write_text(json.dumps({"fingerprint": before.fingerprint(), "config": settings}))
    with pytest.raises(ValueError, match=r"other settings \(dice_over: 'image' there, 'batch' here\)"):
        check_resumable(tmp_path, engine_runs.tiny_config(scale=0.5, patch=(32, 32)))
    check_resumable(tmp_path, before)  # the same settings: no error


def test_a_joint_config_builds_one_logit_per_lesion_and_refuses_softmax_or_one_lesion():
    config = engine_runs.tiny_config(lesions=("EX", "HE"), joint=True, activation="sigmoid")
    assert config.num_classes == 2 and config.model_lesions == [("EX", "HE")]
    assert train_module.lesion_channels(config) == [0, 1]
    with pytest.raises(ValueError, match="activation must be 'sigmoid' with joint"):
        engine_runs.tiny_config(lesions=("EX", "HE"), joint=True)
    with pytest.raises(ValueError, match=r"joint needs two or more lesions .* got \['EX'\]"):
        engine_runs.tiny_config(lesions=("EX",), joint=True, activation="sigmoid")


ILL_SCALES = [
    (dict(scale=1.5, patch=(32, 32)), r"scale must be a share of the native resolution in \(0, 1\]"),
    (dict(scale=0.0, patch=(32, 32)), r"scale must be a share"),
    (dict(scale=0.5), r"patch is needed with scale"),
    (dict(patch=(32, 32)), r"patch needs scale"),
    (dict(scale=0.5, patch=(50, 30)), r"multiples of 16 .* got 50 30; nearest valid: 48 32"),
    (dict(scale=0.5, patch=(32, 32), lesion_share=1.5), r"lesion_share must be in \[0, 1\]"),
    (dict(time_budget=-1.0), r"time_budget must be minutes >= 0"),
    (dict(dice_over="pixel"), r"dice_over must be one of \['image', 'batch'\], got 'pixel'"),
    (dict(scale=0.5, patch=(32, 32), bn_windows=-1), r"bn_windows must be an int >= 0, got -1"),
    (dict(bn_windows=8), r"bn_windows needs scale \(whole images are trained as they are evaluated\), got 8"),
]


@pytest.mark.parametrize("overrides, message", ILL_SCALES)
def test_bad_scale_settings_are_refused_naming_the_valid_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        engine_runs.tiny_config(**overrides)


def test_the_new_settings_at_their_defaults_keep_the_paper_protocol_s_fingerprint():
    paper = engine_runs.tiny_config()
    assert paper.fingerprint() == engine_runs.tiny_config(tensorboard=True).fingerprint()
    assert paper.fingerprint() != engine_runs.tiny_config(scale=0.5, patch=(32, 32)).fingerprint()
    assert paper.fingerprint() != engine_runs.tiny_config(time_budget=1.0).fingerprint()


# ------------------------------------------------------------------------------------------------- the patch sampler


@pytest.mark.parametrize("share", [0.0, 0.3, 0.5, 1.0])
def test_the_sampler_s_lesion_share_holds_over_many_draws(share):
    """One lesion pixel in one of two crops: a lesion-centred patch always holds it, a uniform one with a probability
    counted exactly; the share of centred draws and of patches holding the pixel stay within 4.5 binomial sigmas."""
    height, width, patch = 40, 56, (16, 16)
    images = [torch.zeros(3, height, width, dtype=torch.uint8) for _ in range(2)]
    masks = [torch.zeros(1, height, width, dtype=torch.uint8) for _ in range(2)]
    row, column = 3, 50  # near a corner: the patch is shifted inside the crop
    masks[0][0, row, column] = 1
    sampler = PatchSampler(scaled_arrays(images, masks), torch.tensor([0, 1]), patch, share)
    draws = sampler.draw(6000, torch.Generator().manual_seed(1))
    n = len(draws)
    centred = sum(d[3] for d in draws) / n
    assert abs(centred - share) <= 4.5 * math.sqrt(share * (1 - share) / n) + 1e-12
    holds = [d[0] == 0 and d[1] <= row < d[1] + patch[0] and d[2] <= column < d[2] + patch[1] for d in draws]
    assert all(h for h, d in zip(holds, draws) if d[3]), "a lesion-centred patch must hold its lesion pixel"
    tops = [t for t in range(height - patch[0] + 1) if t <= row < t + patch[0]]
    lefts = [s for s in range(width - patch[1] + 1) if s <= column < s + patch[1]]
    uniform = 0.5 * len(tops) * len(lefts) / ((height - patch[0] + 1) * (width - patch[1] + 1))
    expected = share + (1 - share) * uniform
    assert abs(sum(holds) / n - expected) <= 4.5 * math.sqrt(expected * (1 - expected) / n) + 1e-12
    images_, masks_ = sampler.batch(draws[:5])
    assert images_.shape == (5, 3, *patch) and masks_.shape == (5, 1, *patch)


def test_a_patch_larger_than_a_scaled_crop_is_refused_naming_the_image():
    arrays = scaled_arrays([torch.zeros(3, 20, 40, dtype=torch.uint8)], [torch.zeros(1, 20, 40, dtype=torch.uint8)])
    with pytest.raises(ValueError, match=r"patch 32 32 is larger than the field of view of image 'img0'"):
        arrays.check_patch_fits((32, 32))


# ------------------------------------------------------------------------------------ sliding-window evaluation


def _model(classes=2):
    torch.manual_seed(3)
    return UNet(3, classes, channels=(4, 8, 8, 8, 8), groups=1).eval()


def test_the_sliding_window_equals_a_whole_image_forward_where_one_window_covers_the_image():
    model = _model()
    image = torch.randint(0, 256, (3, 32, 48), dtype=torch.uint8)
    arrays = scaled_arrays([image], [torch.zeros(2, 32, 48, dtype=torch.uint8)])
    ((_, probability, _),) = window_probabilities(model, arrays, torch.tensor([0]), (32, 48), [0, 1], "sigmoid")
    with torch.no_grad():
        expected = torch.sigmoid(model(image[None].float() / 255))[0]
    torch.testing.assert_close(probability, expected, rtol=1e-5, atol=1e-6)


def test_the_test_scores_every_pixel_of_the_original_image_with_zero_outside_the_crop():
    """Scale 1, one window: the original-resolution probabilities are the forward pass pasted at the crop box."""

    class Original:
        def original_masks(self, image_id):
            return np.ones((1, 40, 60), dtype=np.uint8)

    model = _model(1)
    image = torch.randint(0, 256, (3, 32, 48), dtype=torch.uint8)
    box = Box(top=4, left=10, bottom=36, right=58)
    arrays = scaled_arrays([image], [torch.zeros(1, 32, 48, dtype=torch.uint8)], [box], Original())
    ((_, full, truth),) = window_probabilities(
        model, arrays, torch.tensor([0]), (32, 48), [0], "sigmoid", original=True
    )
    with torch.no_grad():
        expected = torch.sigmoid(model(image[None].float() / 255))[0]
    assert full.shape == truth.shape == (1, 40, 60)
    torch.testing.assert_close(full[:, 4:36, 10:58], expected, rtol=1e-5, atol=1e-6)
    assert full.sum() == full[:, 4:36, 10:58].sum()


def test_pooled_metrics_equal_the_metrics_of_the_concatenated_pixels():
    model = _model(1)
    torch.manual_seed(5)
    shapes = [(32, 48), (48, 32), (32, 32)]
    images = [torch.randint(0, 256, (3, *s), dtype=torch.uint8) for s in shapes]
    masks = [(torch.rand(1, *s) < 0.2).to(torch.uint8) for s in shapes]
    arrays = scaled_arrays(images, masks)
    (result,) = evaluate_windows(model, arrays, torch.arange(3), (32, 32), [0], "sigmoid")
    probabilities = [
        p[0].flatten() for _, p, _ in window_probabilities(model, arrays, torch.arange(3), (32, 32), [0], "sigmoid")
    ]
    scores, truth = torch.cat(probabilities).double(), torch.cat([m.flatten() for m in masks]).bool()
    predicted = scores >= 0.5
    tp, fp, fn = (int(c.sum()) for c in (predicted & truth, predicted & ~truth, ~predicted & truth))
    assert result["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
    exact = average_precision_score(truth.numpy(), scores.numpy())
    assert abs(result["aupr"] - exact) <= result["aupr_error_bound"] + 1e-9
    assert result["num_images"] == 3 and result["num_pixels"] == truth.numel()


# ------------------------------------------------------------------------ batch norm's statistics of the windows


def test_the_batch_norm_windows_are_the_sliding_window_s_tiles_of_the_training_crops():
    """Every window the sampler gives is a tile the core's sliding window cuts (read back from its predictor), in
    the grid's order; fewer are a seeded subset of them, without repeats."""
    from group_attention.fundus.tiles import WINDOW_OVERLAP
    from group_attention.inference import sliding_window_inference

    torch.manual_seed(0)
    images = [torch.randint(0, 256, (3, *shape), dtype=torch.uint8) for shape in [(40, 56), (32, 80), (48, 48)]]
    masks = [torch.zeros(1, *image.shape[1:], dtype=torch.uint8) for image in images]
    patch = (32, 32)
    sampler = PatchSampler(scaled_arrays(images, masks), torch.tensor([2, 0]), patch, 0.5)
    tiles = []

    def record(batch):
        tiles.append(batch.clone())
        return torch.zeros(batch.shape[0], 1, *batch.shape[2:])

    for index in (2, 0):  # the training images
        sliding_window_inference(images[index][None].float() / 255, patch, 1, record, WINDOW_OVERLAP, "gaussian")
    every = sampler.windows(1000, torch.Generator().manual_seed(0))
    assert len(every) == len(tiles) == 4 + 4  # 48 x 48 and 40 x 56: two starts along each axis
    torch.testing.assert_close(sampler.batch(every)[0], torch.cat(tiles), rtol=0, atol=0)
    assert not any(draw[3] for draw in every), "a window is not a lesion-centred draw"

    some = sampler.windows(3, torch.Generator().manual_seed(4))
    assert len(set(some)) == 3 and set(some) <= set(every)
    assert some == sorted(some, key=every.index) == sampler.windows(3, torch.Generator().manual_seed(4))


def _trainer(tmp_path, arrays, bn_windows, train_ids):
    config = engine_runs.tiny_config(scale=0.5, patch=(32, 32), bn_windows=bn_windows, batch_size=3)
    spec = train_module.RunSpec("ganet", "EX", 0, train_ids=train_ids, val_ids=[], test_ids=[])
    return train_module.Trainer(spec, arrays, config, tmp_path, torch.device("cpu"), progress=False)


def test_calibration_gives_each_batch_norm_the_mean_statistics_of_the_windows_and_leaves_the_weights(tmp_path):
    """Each batch norm's running mean and variance become the average over the batches of windows of its input's
    per-batch mean and unbiased variance, computed here in float64 from the inputs a forward hook reads; the
    weights and the training mode are as they were."""
    torch.manual_seed(1)
    images = [torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8) for _ in range(3)]
    masks = [torch.zeros(1, 48, 64, dtype=torch.uint8) for _ in range(3)]
    arrays = scaled_arrays(images, masks)
    trainer = _trainer(tmp_path, arrays, bn_windows=7, train_ids=["img0", "img2"])
    model = trainer.model
    model.train()
    assert len(trainer.bn_draws) == 7
    norms = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert norms, "GANet has batch norms"
    for m in norms.values():  # training's running averages, far from the windows'
        m.running_mean.fill_(3.0)
        m.running_var.fill_(7.0)
    inputs: dict[str, list[torch.Tensor]] = {name: [] for name in norms}
    hooks = [
        m.register_forward_pre_hook(lambda m, a, name=name: inputs[name].append(a[0].double()))
        for name, m in norms.items()
    ]
    with torch.no_grad():
        for start, stop in ((0, 4), (4, 7)):  # 7 windows, batch size 3: two batches, the remainder shared out
            model(trainer.sampler.batch(trainer.bn_draws[start:stop])[0])
    for hook in hooks:
        hook.remove()
    parameters = {name: p.detach().clone() for name, p in model.named_parameters()}

    trainer.calibrate_batch_norm()

    assert model.training
    for name, m in norms.items():
        means = torch.stack([x.mean((0, 2, 3)) for x in inputs[name]])
        variances = torch.stack([x.transpose(0, 1).flatten(1).var(1, unbiased=True) for x in inputs[name]])
        torch.testing.assert_close(m.running_mean.double(), means.mean(0), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(m.running_var.double(), variances.mean(0), rtol=1e-4, atol=1e-5)
        assert m.momentum == 0.1, "the momentum is put back"
    for name, p in model.named_parameters():
        assert torch.equal(p, parameters[name]), name


def test_without_windows_calibration_keeps_training_s_running_averages(tmp_path):
    images = [torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8) for _ in range(2)]
    arrays = scaled_arrays(images, [torch.zeros(1, 48, 64, dtype=torch.uint8) for _ in range(2)])
    trainer = _trainer(tmp_path, arrays, bn_windows=0, train_ids=["img0", "img1"])
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.calibrate_batch_norm()
    assert trainer.bn_draws == []
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_batch_norm_windows_default_to_patches_only_and_a_patch_run_without_them_is_not_resumed_silently(tmp_path):
    from group_attention.fundus.engine.config import PATCH_BN_WINDOWS
    from group_attention.fundus.engine.experiment import check_resumable

    patches = engine_runs.tiny_config(scale=0.5, patch=(32, 32))
    assert patches.bn_windows == PATCH_BN_WINDOWS == 64
    assert engine_runs.tiny_config().bn_windows == 0
    assert engine_runs.tiny_config(bn_windows=0).fingerprint() == engine_runs.tiny_config().fingerprint()
    before = engine_runs.tiny_config(scale=0.5, patch=(32, 32), bn_windows=0)
    assert before.fingerprint() != patches.fingerprint()
    settings = before.to_dict()
    del settings["bn_windows"]  # a config.json written before the setting existed
    finished = tmp_path / "runs" / "ganet" / "EX" / "fold1" / "metrics.json"
    finished.parent.mkdir(parents=True)
    finished.write_text("{}")
    (tmp_path / "config.json").write_text(json.dumps({"fingerprint": before.fingerprint(), "config": settings}))
    with pytest.raises(ValueError, match=r"other settings \(bn_windows: 0 there, 64 here\)"):
        check_resumable(tmp_path, patches)
    check_resumable(tmp_path, before)


# ---------------------------------------------------------------------------------------------- learning curves


def test_the_learning_curves_picture_shows_three_panels_and_marks_the_best_epoch():
    history = [
        {"epoch": k, "train_loss": 1 / k, "train_dice": 0, "val_dice": k / 10, "val_aupr": k / 20, "seconds": 1}
        for k in range(1, 6)
    ]
    marked = np.asarray(curves_picture(history, best_epoch=3))
    unmarked = np.asarray(curves_picture(history, best_epoch=None))
    assert marked.shape == unmarked.shape == (240, 3 * 360, 3)
    assert (marked != unmarked).any(axis=2).sum() > 100  # the grey line and its label


def test_tensorboard_without_its_package_names_the_extra(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name == "tensorboard":
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ImportError, match=r'pip install "group-attention\[tensorboard\]"'):
        tensorboard_writer(tmp_path / "tb")


def test_tensorboard_logs_the_scalars_of_every_epoch(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monitor = TrainingMonitor(tmp_path, tensorboard=True)
    history = [{"epoch": k, "train_loss": 1 / k, "val_dice": k / 10, "val_aupr": k / 20} for k in (1, 2)]
    monitor.epoch_done(history[:1], 1)
    monitor.epoch_done(history, 2)
    monitor.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("val_dice")] == [1, 2]
    assert (tmp_path / "curves.png").is_file()


# ------------------------------------------------------------------------------------------- a real photograph


@needs_real_idrid
def test_a_real_photograph_at_a_quarter_scale_keeps_its_crop_masks_and_original_masks(real_dataset, real_ids):
    scaled = real_dataset.at_scale(0.25)
    image, masks = scaled.load_arrays(real_ids[0])
    box = scaled.crop_box(real_ids[0])
    assert image.shape[:2] == masks.shape[1:] == (round(box.height / 4), round(box.width / 4))
    original = scaled.original_masks(real_ids[0])
    assert original.shape == (2, 2848, 4288) and original.dtype == np.uint8
    # every lesion of the crop at full resolution leaves at least one pixel at a quarter scale
    assert all(masks[k].any() == original[k, box.top : box.bottom, box.left : box.right].any() for k in range(2))
    # the whole-image protocol's entry is unchanged by the scaled one
    assert real_dataset.load_arrays(real_ids[0])[0].shape == (384, 512, 3)
