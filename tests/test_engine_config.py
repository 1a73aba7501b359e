"""The experiment settings: what is refused, and what the resumption fingerprint must and must not see."""

from __future__ import annotations

import pytest

from group_attention.fundus.engine import ExperimentConfig


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (dict(lesions="EX"), TypeError, "lesions must be a sequence .* the string 'EX'"),
        (dict(variants="ganet"), TypeError, "variants must be a sequence"),
        (dict(lesions=("EX", 2)), TypeError, r"lesions must be class names \(str\), got 2 of type int"),
        (dict(seed=0.5), TypeError, "seed must be an int >= 0, got 0.5 of type float"),
        (dict(only_folds=(0.5,)), ValueError, r"only_folds must be fold indices in 0..2, got \[0.5\]"),
        (dict(seed=-1), ValueError, "seed must be an int >= 0"),
        (dict(degrees=float("nan")), ValueError, "degrees must be in"),
    ],
)
def test_bad_experiment_settings_are_named(overrides, error, message):
    with pytest.raises(error, match=message):
        ExperimentConfig(**overrides)


def test_repeated_variants_lesions_and_folds_run_once():
    config = ExperimentConfig(variants=("baseline", "ganet", "baseline"), lesions=("EX", "EX"), only_folds=(0, 0))
    assert (config.variants, config.lesions, config.only_folds) == (("baseline", "ganet"), ("EX",), (0,))


@pytest.mark.parametrize(
    "field, value",
    [
        ("seed", 1),
        ("size", (64, 96)),
        ("epochs", 5),
        ("lr", 1e-3),
        ("batch_size", 4),
        ("folds", 4),
        ("protocol", "official"),
        ("val_fraction", 0.2),
        ("degrees", 90.0),
        ("amp", True),
        ("data_root", "/data/idrid"),
        ("synthetic", {"n_train": 6, "n_test": 2, "size": (64, 96)}),
    ],
)
def test_the_fingerprint_changes_with_every_setting_that_changes_results(field, value):
    """A resumed run must never continue a run of another seed, size, length... (its checkpoints would mix)."""
    base = ExperimentConfig()
    assert getattr(base, field) != value
    assert ExperimentConfig(**{field: value}).fingerprint() != base.fingerprint()


@pytest.mark.parametrize(
    "field, value",
    [
        ("device", "cpu"),
        ("workers", 4),
        ("overlays", -1),
        ("cache_dir", "/tmp/cache"),
        ("variants", ("ganet",)),
        ("lesions", ("HE",)),
        ("only_folds", (1,)),
        ("checkpoint_seconds", 0.0),
    ],
)
def test_the_fingerprint_ignores_what_may_change_between_resumed_runs(field, value):
    base = ExperimentConfig()
    assert getattr(base, field) != value
    assert ExperimentConfig(**{field: value}).fingerprint() == base.fingerprint()
