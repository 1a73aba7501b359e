"""Training one run: checkpoint cadence, and each process's share of an epoch under torchrun."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from engine_runs import NumberedSquares, tiny_config

import group_attention.fundus.engine.train as train_module
from group_attention.fundus import load_model
from group_attention.fundus.engine import run_experiment
from group_attention.fundus.engine.distributed import Context


def test_checkpoints_are_written_at_most_every_checkpoint_seconds_and_at_the_end(tmp_path):
    config = tiny_config(epochs=3, checkpoint_seconds=1e9, keep_checkpoints="all", cache_dir=str(tmp_path / "cache"))
    run_dir = tmp_path / "out" / "runs" / "ganet" / "EX" / "fold1"
    seen = []

    def record(row):
        seen.append((row["epoch"], (run_dir / "checkpoint_last.pt").exists()))

    run_experiment(config, tmp_path / "out", on_epoch_end=record, progress=False)
    assert seen == [(1, False), (2, False), (3, True)]
    state = torch.load(run_dir / "checkpoint_last.pt", weights_only=False)
    best = torch.load(run_dir / "checkpoint_best.pt", weights_only=False)
    assert state["epoch"] == 3 and state["best_epoch"] == best["epoch"] and len(state["history"]) == 3


def test_processes_under_torchrun_draw_disjoint_equal_shares_of_each_epoch():
    """The fast counterpart of the torchrun test: every process's share, without starting processes."""
    spec = train_module.RunSpec("baseline", "EX", 0, [f"img{k}" for k in range(7)], [], [])
    shares = []
    for rank in range(2):
        process = SimpleNamespace(
            config=tiny_config(), spec=spec, train_indices=torch.arange(7), context=Context(rank, 2)
        )  # what epoch_order reads of a Trainer
        shares.append(train_module.Trainer.epoch_order(process, epoch=3).tolist())
    assert len(shares[0]) == len(shares[1]) == 4  # 7 images padded to 8, as DistributedSampler does
    assert sorted(set(shares[0]) | set(shares[1])) == list(range(7))
    assert len(set(shares[0]) & set(shares[1])) == 1  # only the one image repeated to even the shares


def test_the_model_follows_the_data_and_the_config_not_engine_constants(tmp_path):
    """A greyscale source and a sigmoid output: the engine builds a 1 -> 1 channel model and records it."""
    config = tiny_config(
        lesions=("square",), variants=("baseline",), epochs=1, overlays=0, activation="sigmoid", loss="dice"
    )
    run_experiment(config, tmp_path / "out", progress=False, source=NumberedSquares(channels=1))
    model = load_model(tmp_path / "out" / "runs" / "baseline" / "square" / "fold1" / "checkpoint_best.pt")
    spec = model.inference_spec
    assert (spec.in_channels, spec.num_classes, spec.lesion_channel) == (1, 1, 0)
    assert model(torch.rand(2, 1, 32, 48)).shape == (2, 1, 32, 48)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_the_dice_loss_is_soft_dice_over_the_model_output(activation):
    config = tiny_config(activation=activation, loss="dice")
    torch.manual_seed(0)
    logits = torch.randn(3, config.num_classes, 8, 10)
    masks = (torch.rand(3, 8, 10) < 0.3).long()
    loss = train_module.make_loss(config)(logits, masks)
    if activation == "sigmoid":  # per lesion as the paper: the two classes [1 - sigmoid(z), sigmoid(z)]
        lesion = torch.sigmoid(logits[:, 0])
        expected = _soft_dice_over_classes(torch.stack([1 - lesion, lesion], dim=1), masks)
    else:  # both classes weigh the same
        expected = _soft_dice_over_classes(torch.softmax(logits, dim=1), masks)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)


def _soft_dice_over_classes(probability, masks, smooth=1e-5):
    """Multi-class soft Dice with uniform weights: 1 - (2 sum_c sum_i p g + e) / (sum_c sum_i (p + g) + e)."""
    truth = torch.stack([masks == 0, masks == 1], dim=1).double()
    p = probability.double()
    numerator = 2 * (p * truth).flatten(1).sum(1) + smooth
    denominator = (p + truth).flatten(1).sum(1) + smooth
    return (1 - numerator / denominator).mean()


def test_an_unknown_activation_or_loss_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"activation must be one of \['softmax', 'sigmoid'\]"):
        tiny_config(activation="relu")
    with pytest.raises(ValueError, match=r"loss must be one of \['generalized_dice', 'dice'\]"):
        tiny_config(loss="focal")
