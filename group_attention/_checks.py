"""Argument checks shared by every module: errors name the argument, the value and what is valid."""

from __future__ import annotations

import math
import numbers

import torch


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is a positive ``int``; raise ``TypeError``/``ValueError`` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {value!r} of type {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def check_positive_real(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite real number > 0; raise ``TypeError``/``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number, got {value!r} of type {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_int(name: str, value: object, minimum: int = 0) -> int:
    """Return ``value`` if it is an ``int >= minimum``; raise ``TypeError`` (not an int) or ``ValueError`` (too
    small) naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r} of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def check_real(name: str, value: object) -> float:
    """Return ``value`` if it is a real number (``int``, ``float``, NumPy scalar; not ``bool``); raise ``TypeError``
    naming ``name`` otherwise. Ranges are the caller's to check (NaN passes here)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    return value  # type: ignore[return-value]


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a ``bool``; raise ``TypeError`` naming ``name`` otherwise (``None`` or a string
    such as ``"no"`` would otherwise read as a truth value)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} of type {type(value).__name__}")
    return value


def divisors(n: int) -> list[int]:
    """All positive divisors of ``n`` in increasing order."""
    return [d for d in range(1, n + 1) if n % d == 0]


def check_groups(channels_name: str, channels: int, groups: int, owner: "str | None" = None) -> None:
    """Raise ``ValueError`` unless ``groups`` divides ``channels``, listing the groups that would; with ``owner``
    (a layer's class name) also the fix for a model that builds the layer itself, as timm's ``attn_layer``."""
    check_positive_int(channels_name, channels)
    check_positive_int("groups", groups)
    if channels % groups:
        valid = divisors(channels)
        message = f"{channels_name}={channels} is not divisible by groups={groups}; valid groups: {valid}"
        if owner is not None:
            fit = max(d for d in valid if d <= groups)
            message = (
                f"{owner}: {message}. Build it as {owner}({channels}, groups={fit}); where a model builds "
                f"the layer (timm's attn_layer/se_layer), pass functools.partial({owner}, groups={fit}) or "
                "another group count that divides every width"
            )
        raise ValueError(message)


def check_feature_map(name: str, x: object, channels: int, owner: str) -> None:
    """Check that ``x`` is a ``(B, C, *spatial)`` tensor with ``C == channels`` and at least one spatial dim.

    A ``torch.fx`` proxy passes unchecked: symbolic tracing records the layer's call, and the check runs when the
    traced graph runs on tensors.
    """
    if isinstance(x, torch.fx.Proxy):
        return
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{owner}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 3:
        raise ValueError(
            f"{owner}: {name} must have shape (B, C, *spatial) with 1 to 3 spatial dims, got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{owner}: {name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[1] != channels:
        raise ValueError(
            f"{owner}: {name} has {x.shape[1]} channels (shape {tuple(x.shape)}), "
            f"but the module was built for {channels} channels"
        )


def check_choice(name: str, value: object, valid: "list[str] | tuple[str, ...]") -> str:
    """Return ``value`` if it is one of ``valid``; raise ``ValueError`` listing the valid values otherwise."""
    if value not in valid:
        raise ValueError(f"{name} must be one of {list(valid)}, got {value!r}")
    return value  # type: ignore[return-value]
