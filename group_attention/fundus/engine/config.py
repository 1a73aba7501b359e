"""The experiment's settings in one place (the paper's protocol and the quick synthetic demo), and the data source
they describe."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..._checks import check_bool, check_choice, check_int, check_positive_int
from ...models import VARIANTS
from ..data import IDRiDSource, SegmentationSource, SyntheticIDRiDSource
from ..data.source import PROTOCOLS
from .loss import DICE_OVER

KEEP_CHECKPOINTS = ("best", "all", "none")
# The network halves the resolution four times: a side below its total stride leaves nothing to attend to.
#: The model's output per class: ``"softmax"`` over a background and a lesion logit (the paper's two-class U-Net),
#: or ``"sigmoid"`` of one lesion logit. Value: the logit channels per class.
ACTIVATIONS = {"softmax": 2, "sigmoid": 1}
#: Training losses: the generalized Dice loss (Sudre et al. 2017, the paper's) or plain soft Dice (uniform class
#: weights). Value: the ``weight_type`` of :class:`~group_attention.losses.GeneralizedDiceLoss`.
LOSSES = {"generalized_dice": "square", "dice": "uniform"}

MIN_SIDE = 16
#: The U-Net's total stride: a training patch's sides must be multiples of it (four halvings).
STRIDE = 16
# IDRiD photographs are 4288 x 2848; a larger side only upsamples, and the cached arrays would not fit in memory.
MAX_SIDE = 8192
#: The training windows batch norm's statistics are estimated from in scale mode by default
#: (:attr:`ExperimentConfig.bn_windows`).
PATCH_BN_WINDOWS = 64


@dataclass
class ExperimentConfig:
    """Everything that defines an IDRiD experiment run; defaults are the paper's protocol (section 3.1).

    Attributes:
        data_root: IDRiD root (the folder holding ``A. Segmentation``); None generates the synthetic look-alike.
        lesions: lesions segmented separately, one model each (paper: EX and HE): class names of the data source,
            checked against it by :func:`~group_attention.fundus.engine.run_experiment` before anything is written.
        variants: Table 1 rows to train (names of :data:`~group_attention.VARIANTS`).
        protocol: ``"cv"`` (k-fold cross-validation over all images, the paper's) or ``"official"`` (train on the
            official training set, test on the testing set).
        folds: number of cross-validation folds (paper: 3).
        only_folds: run only these fold indices (0-based), e.g. to spread folds over machines; None runs all.
        epochs, batch_size, lr: Adam training (paper: 300, 8, 1e-4).
        activation: the model's output per class, a key of :data:`ACTIVATIONS`: ``"softmax"`` (paper: a background
            and a lesion logit) or ``"sigmoid"`` (one lesion logit).
        loss: a key of :data:`LOSSES`: ``"generalized_dice"`` (paper) or ``"dice"``.
        size: ``(H, W)`` after cropping the background (paper: 384 x 512).
        val_fraction: share of each training fold held out to pick the best checkpoint (at least one image).
        seed: seeds the model, folds, shuffling and augmentation.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        amp: mixed precision (fp16 with loss scaling on CUDA, bf16 on CPU).
        workers: processes decoding and preprocessing images for the on-disk cache.
        degrees: random rotation range (uniform in [-degrees, degrees]).
        overlays: overlay PNGs written per fold (test images, Fig. 5 colours); -1 for all.
        synthetic: ``{"n_train", "n_test", "size"}`` of the generated look-alike when ``data_root`` is None.
        cache_dir: preprocessed-array cache (``"auto"``: ``$GA_CACHE_DIR`` or ``~/.cache/group-attention``).
        checkpoint_seconds: write ``checkpoint_last.pt`` at most this often (and after the last epoch); 0 writes
            it after every epoch. A killed run redoes at most this much training.
        keep_checkpoints: what a finished run keeps: ``"best"`` (default: the best weights, no optimizer state),
            ``"all"`` (also ``checkpoint_last.pt`` with the optimizer state, to train on) or ``"none"``. A run in
            progress always keeps both, since resuming needs them.
        joint: one model for all :attr:`lesions` (one sigmoid output per lesion, independent: IDRiD's lesions
            overlap) instead of one model per lesion (default False, the paper's). Needs two or more lesions and
            ``activation="sigmoid"``.
        scale: train on patches of the field-of-view crop at this share of the native resolution (0 < scale <= 1,
            e.g. 0.25 or 0.5) instead of the whole crop resized to :attr:`size`; None (default) is the paper's
            whole-image protocol. Needs :attr:`patch`.
        patch: ``(H, W)`` of a training patch in scale mode, multiples of 16; also the sliding window's tile.
        patches_per_image: patches drawn per training image and epoch in scale mode (default 4).
        lesion_share: share of the patches centred on a lesion pixel in scale mode (default 0.5); the rest are
            uniform over the crop.
        dice_over: where the training loss's Dice is computed: ``"image"`` (each image's, then the batch mean: the
            paper's) or ``"batch"`` (the batch's pixels pooled as one image, nnU-Net's "batch Dice"). None (default)
            is ``"batch"`` in scale mode and ``"image"`` otherwise: per patch, a patch without a lesion scores only
            its mean predicted probability, so its false positives weigh a small share of those beside a lesion
            (about 2 V / N for a lesion of V of a patch's N pixels). Set from None when the config is built.
        bn_windows: in scale mode, batch norm's running mean and variance are estimated again, before every
            validation and before the weights are tested, from this many of the windows the sliding window cuts
            from the training crops (drawn once per run; every window if there are fewer), as PreciseBN or
            :func:`torch.optim.swa_utils.update_bn` do. Training's running averages follow its patches,
            :attr:`lesion_share` of them centred on a lesion; the model is evaluated on windows over the whole crop,
            whose statistics differ (on IDRiD, training's averages cost a patch model up to 18 points of AUPR).
            0 keeps training's running averages. None (default) is 64 in scale mode and 0 otherwise (whole images
            are sampled as they are evaluated). Set from None when the config is built.
        time_budget: stop a run's training after this many minutes (summed over resumes; mid-epoch if need be: the
            step that reaches the budget is the last) and test its best checkpoint; 0 (default) trains all
            :attr:`epochs`.
        tensorboard: also log the scalars and a few overlays for TensorBoard under each run's ``tensorboard/``.
    """

    data_root: "str | None" = None
    lesions: tuple[str, ...] = ("EX", "HE")
    variants: tuple[str, ...] = tuple(VARIANTS)
    protocol: str = "cv"
    folds: int = 3
    only_folds: "tuple[int, ...] | None" = None
    epochs: int = 300
    batch_size: int = 8
    lr: float = 1e-4
    activation: str = "softmax"
    loss: str = "generalized_dice"
    size: tuple[int, int] = (384, 512)
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    workers: int = 0
    degrees: float = 180.0
    overlays: int = 4
    synthetic: dict[str, Any] = field(default_factory=lambda: {"n_train": 54, "n_test": 27, "size": (426, 640)})
    cache_dir: "str | None" = "auto"
    checkpoint_seconds: float = 30.0
    keep_checkpoints: str = "best"
    joint: bool = False
    scale: "float | None" = None
    patch: "tuple[int, int] | None" = None
    patches_per_image: int = 4
    lesion_share: float = 0.5
    dice_over: "str | None" = None
    bn_windows: "int | None" = None
    time_budget: float = 0.0
    tensorboard: bool = False

    def __post_init__(self) -> None:
        for name in ("lesions", "variants", "only_folds"):
            if isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a sequence (e.g. a tuple), got the string {getattr(self, name)!r}")
        # A repeated name or fold would run (and count) twice: keep the first of each.
        self.lesions = tuple(dict.fromkeys(self.lesions))
        self.variants = tuple(dict.fromkeys(v.lower() for v in self.variants))
        self.size = tuple(self.size)
        for lesion in self.lesions:
            if not isinstance(lesion, str):
                raise TypeError(f"lesions must be class names (str), got {lesion!r} of type {type(lesion).__name__}")
        for variant in self.variants:
            check_choice("variant", variant, list(VARIANTS))
        check_choice("protocol", self.protocol, PROTOCOLS)
        check_choice("activation", self.activation, list(ACTIVATIONS))
        check_choice("loss", self.loss, list(LOSSES))
        for name in ("folds", "epochs", "batch_size"):
            check_positive_int(name, getattr(self, name))
        if self.protocol == "cv" and self.folds < 2:
            raise ValueError(f"folds must be at least 2 for cross-validation, got {self.folds}")
        if self.only_folds is not None:
            self.only_folds = tuple(dict.fromkeys(self.only_folds))
            bad = [
                f
                for f in self.only_folds
                if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < self.num_folds
            ]
            if bad:
                raise ValueError(f"only_folds must be fold indices in 0..{self.num_folds - 1}, got {list(bad)}")
        check_image_size(self.size)
        check_choice("keep_checkpoints", self.keep_checkpoints, KEEP_CHECKPOINTS)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite positive number, got {self.lr}")
        if not self.checkpoint_seconds >= 0:
            raise ValueError(f"checkpoint_seconds must be >= 0, got {self.checkpoint_seconds}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        check_int("seed", self.seed)
        if not 0 <= self.degrees <= 180:  # also rejects NaN
            raise ValueError(f"degrees must be in [0, 180], got {self.degrees}")
        self._check_beyond_the_paper()

    def _check_beyond_the_paper(self) -> None:
        """The joint model and the native-scale protocol: settings that only make sense together."""
        if self.joint:
            if len(self.lesions) < 2:
                raise ValueError(
                    f"joint needs two or more lesions (one model for all of them), got {list(self.lesions)}; "
                    "give e.g. --lesion EX HE, or drop --joint"
                )
            if self.activation != "sigmoid":
                raise ValueError(
                    f"activation must be 'sigmoid' with joint (one independent output per lesion: IDRiD's lesions "
                    f"overlap), got {self.activation!r}"
                )
        if self.scale is not None:
            if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not 0 < self.scale <= 1:
                raise ValueError(
                    f"scale must be a share of the native resolution in (0, 1] (e.g. 1.0, 0.5, 0.25), got "
                    f"{self.scale!r}"
                )
            self.scale = float(self.scale)
            if self.patch is None:
                raise ValueError("patch is needed with scale: give the training patch size, e.g. --patch 256 256")
        if self.patch is not None:
            if self.scale is None:
                raise ValueError(
                    "patch needs scale (patches are cut from the crop at a share of the native resolution), "
                    "e.g. --scale 0.5"
                )
            self.patch = check_patch(self.patch)
        check_positive_int("patches_per_image", self.patches_per_image)
        if not 0 <= self.lesion_share <= 1:
            raise ValueError(f"lesion_share must be in [0, 1], got {self.lesion_share}")
        if self.dice_over is None:
            self.dice_over = "batch" if self.patch_mode else "image"
        check_choice("dice_over", self.dice_over, list(DICE_OVER))
        if self.bn_windows is None:
            self.bn_windows = PATCH_BN_WINDOWS if self.patch_mode else 0
        check_int("bn_windows", self.bn_windows)
        if self.bn_windows and not self.patch_mode:
            raise ValueError(
                f"bn_windows needs scale (whole images are trained as they are evaluated), got {self.bn_windows}; "
                "drop it, or give --scale and --patch"
            )
        if not (self.time_budget >= 0 and math.isfinite(self.time_budget)):
            raise ValueError(f"time_budget must be minutes >= 0 (0: no budget), got {self.time_budget}")
        check_bool("tensorboard", self.tensorboard)
        check_bool("joint", self.joint)

    @property
    def num_folds(self) -> int:
        return self.folds if self.protocol == "cv" else 1

    @property
    def num_classes(self) -> int:
        """The model's output channels: 2 with softmax, 1 with sigmoid; a joint model's one per lesion."""
        return len(self.lesions) if self.joint else ACTIVATIONS[self.activation]

    @property
    def model_lesions(self) -> list[tuple[str, ...]]:
        """The lesions of each model the experiment trains: all together when :attr:`joint`, else one each."""
        return [tuple(self.lesions)] if self.joint else [(lesion,) for lesion in self.lesions]

    @property
    def patch_mode(self) -> bool:
        """Whether runs train on patches at :attr:`scale` (else the paper's whole image at :attr:`size`)."""
        return self.scale is not None

    @property
    def synthetic_data(self) -> bool:
        return self.data_root is None

    def data_source(self, out_dir: "str | Path") -> SegmentationSource:
        """The data these settings describe: the IDRiD download at :attr:`data_root`, or (without one) the synthetic
        look-alike of :attr:`synthetic`, written under ``out_dir/synthetic-idrid`` when the experiment starts.

        Raises:
            FileNotFoundError, ValueError: :attr:`data_root` is missing or not an IDRiD tree.
        """
        if self.data_root is not None:
            return IDRiDSource(self.data_root)
        synthetic = self.synthetic
        return SyntheticIDRiDSource(
            Path(out_dir) / "synthetic-idrid",
            n_train=synthetic["n_train"],
            n_test=synthetic["n_test"],
            size=tuple(synthetic["size"]),
            seed=self.seed,
        )

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def fingerprint(self) -> str:
        """A hash of the settings that change results: a rerun with another fingerprint must not resume."""
        return hashlib.sha256(json.dumps(self.result_settings(), sort_keys=True).encode()).hexdigest()[:16]

    def result_settings(self) -> dict[str, Any]:
        """The settings that change results (those of :meth:`fingerprint`), as JSON values; the settings added after
        the paper's are left out at their defaults, so earlier runs keep their fingerprint."""
        relevant = {k: v for k, v in self.to_dict().items() if k not in IGNORED_BY_FINGERPRINT}
        for name, default in BEYOND_DEFAULTS.items():
            if relevant.get(name) == default:
                relevant.pop(name, None)
        return relevant

    def differences_from(self, settings: dict[str, Any]) -> list[str]:
        """``"name: <there> there, <here> here"`` for every setting that changes results in which ``settings`` (the
        ``to_dict()`` of another config, e.g. an earlier version's ``config.json``) differs from this config; a
        setting it lacks reads as its default of :data:`BEYOND_DEFAULTS`."""
        here = self.to_dict()

        def value(of: dict[str, Any], name: str) -> Any:
            return of.get(name, BEYOND_DEFAULTS.get(name))

        names = sorted((here.keys() | settings.keys()) - set(IGNORED_BY_FINGERPRINT))
        return [
            f"{name}: {value(settings, name)!r} there, {value(here, name)!r} here"
            for name in names
            if value(settings, name) != value(here, name)
        ]


#: The settings that may change between resumed runs (left out of the fingerprint).
IGNORED_BY_FINGERPRINT = (
    "device",
    "workers",
    "overlays",
    "cache_dir",
    "variants",
    "lesions",
    "only_folds",
    "checkpoint_seconds",
    "keep_checkpoints",
    "tensorboard",
)

#: The settings beyond the paper's protocol at their defaults (left out of the fingerprint there).
BEYOND_DEFAULTS = {
    "joint": False,
    "scale": None,
    "patch": None,
    "patches_per_image": 4,
    "lesion_share": 0.5,
    "dice_over": "image",
    "bn_windows": 0,
    "time_budget": 0.0,
}


def check_patch(patch: "tuple[int, ...] | list[int]") -> tuple[int, int]:
    """``patch`` as ``(H, W)`` if both sides are positive multiples of :data:`STRIDE`; else a ``ValueError`` naming
    the nearest valid patch."""
    if not (
        isinstance(patch, (tuple, list))
        and len(patch) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) for s in patch)
    ):
        raise ValueError(f"patch must be two ints (H, W), got {patch!r}")
    if all(side >= STRIDE and side % STRIDE == 0 for side in patch):
        return (patch[0], patch[1])
    nearest = [max(STRIDE, STRIDE * round(side / STRIDE)) for side in patch]
    raise ValueError(
        f"patch must have sides that are multiples of {STRIDE} (the network's total stride), got {patch[0]} "
        f"{patch[1]}; nearest valid: {nearest[0]} {nearest[1]}"
    )


def check_image_size(size: "tuple[int, ...]") -> None:
    """Raise ``ValueError`` unless ``size`` is ``(H, W)`` with each side in ``[MIN_SIDE, MAX_SIDE]``, naming the
    nearest valid size."""
    if not (len(size) == 2 and all(isinstance(s, int) and not isinstance(s, bool) for s in size)):
        raise ValueError(f"size must be two ints (H, W), got {size!r}")
    if all(MIN_SIDE <= s <= MAX_SIDE for s in size):
        return
    nearest = tuple(min(max(s, MIN_SIDE), MAX_SIDE) for s in size)
    raise ValueError(
        f"size must have each side in {MIN_SIDE}..{MAX_SIDE} (the network's total stride is {MIN_SIDE}; IDRiD "
        f"photographs are 4288 x 2848), got {size[0]} {size[1]}; nearest valid: {nearest[0]} {nearest[1]} "
        "(the paper uses 384 512)"
    )


def quick_synthetic_config(**overrides: Any) -> ExperimentConfig:
    """A demo on the synthetic look-alike that finishes in a few minutes on a 2-core CPU.

    Hard exudates only, U-Net against GANet, 3-fold cross-validation over 18 small images (96 x 128), 20 epochs of
    batch 2 at lr 2e-3 (the paper's lr 1e-4 needs its 300 epochs). Any field can be overridden.
    """
    settings: dict[str, Any] = dict(
        data_root=None,
        lesions=("EX",),
        variants=("unet", "ganet"),
        epochs=20,
        batch_size=2,
        lr=2e-3,
        size=(96, 128),
        synthetic={"n_train": 12, "n_test": 6, "size": (192, 256)},
        overlays=2,
    )
    settings.update(overrides)
    return ExperimentConfig(**settings)
