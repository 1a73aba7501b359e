"""Insert attention layers after the submodules of an existing model, and take them out again."""

from __future__ import annotations

import fnmatch
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from .._checks import divisors
from ..registry import get_attention
from ._wrap import InsertedModule, check_insertable, original, walk

# Modules whose output has as many channels as their input: a Sequential ending in them takes its channel count
# from the last member before them that declares one.
_CHANNEL_PRESERVING = (
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
)
# Residual blocks whose output width is that of a named submodule: (module, class name) -> attribute.
_BLOCK_OUTPUT = {
    ("torchvision.models.resnet", "BasicBlock"): "bn2",
    ("torchvision.models.resnet", "Bottleneck"): "bn3",
    ("timm.models.resnet", "BasicBlock"): "bn2",
    ("timm.models.resnet", "Bottleneck"): "bn3",
}


class InsertedAttention(NamedTuple):
    """One layer :func:`add_attention` inserted: after the submodule ``name``, for ``channels`` channels."""

    name: str
    channels: int
    layer: nn.Module


class AttentionAfter(InsertedModule):
    """``attention(module(*args))``: an attention layer applied to the output of an existing module.

    The state dict keeps ``module``'s keys unchanged and adds the layer's under ``group_attention.`` (see
    :class:`~group_attention.integrations.InsertedModule`).

    Args:
        module: the original module; its output must be a ``(B, C, *spatial)`` tensor.
        attention: the layer applied to that output.
    """

    inserted_name = "group_attention"

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.inserted(self.module(*args, **kwargs))


After = "type[nn.Module] | tuple[type[nn.Module], ...] | str | Callable[[str, nn.Module], bool]"


def add_attention(
    model: nn.Module, layer: Any, *, after: Any, example_input: Any = None, **layer_kwargs: Any
) -> list[InsertedAttention]:
    """Insert an attention layer after every submodule of ``model`` that ``after`` selects, in place.

    Each selected submodule is replaced by an :class:`AttentionAfter` holding it and a new layer built for its
    output channels. The original parameters keep their state-dict keys, so a checkpoint of the unmodified model
    loads with ``load_state_dict(state, strict=False)`` and only the new layers' keys missing;
    :func:`remove_attention` takes the layers out again. Nothing is changed unless every selected submodule gets a
    layer.

    Channel counts come from what a submodule declares (``out_channels`` of a convolution, ``num_features`` of a
    norm, ``num_channels`` of ``GroupNorm``, ``out_features`` of ``Linear``, the last norm of torchvision's and timm's
    ResNet blocks, the last such member of an ``nn.Sequential``), else from one forward pass of ``example_input``
    (in eval mode and without gradients, so BatchNorm statistics do not change; each submodule's train/eval mode is
    restored afterwards).

    Args:
        model: the model to change.
        layer: ``"cga"``, ``"se"``, ``"sge"``, or a class or factory called as ``layer(channels, **layer_kwargs)``.
        after: which submodules get a layer: a module class or tuple of classes (``isinstance``), a name pattern
            (``"layer*.*"``: ``.`` separates names, ``*`` matches within one name, ``**`` any number of names), or
            a predicate ``(name, module) -> bool``. Names are those of ``model.named_modules()`` before insertion.
        example_input: an input of ``model`` (a tensor, or a tuple of positional arguments), needed only when a
            selected submodule does not declare its channels.
        **layer_kwargs: passed to ``layer`` (e.g. ``groups=16``).

    Returns:
        One :class:`InsertedAttention` ``(name, channels, layer)`` per inserted layer, in model order.

    Raises:
        ValueError: when ``after`` selects nothing, a selected submodule already has a layer after it, channels
            cannot be found without ``example_input``, or the layer does not fit a submodule (e.g. ``groups`` not
            dividing its channels: the error names the submodule and a ``groups`` that would).

    Example:
        >>> from torchvision.models import resnet50
        >>> from torchvision.models.resnet import Bottleneck
        >>> model = resnet50(weights=None)
        >>> inserted = add_attention(model, "cga", after=Bottleneck, groups=32)
        >>> [(i.name, i.channels) for i in inserted][:2]
        [('layer1.0', 256), ('layer1.1', 256)]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    factory = get_attention(layer)
    if factory is None:
        raise ValueError(
            f'layer must name an attention layer ("cga", "se", "sge", a class or a factory), got {layer!r}'
        )
    select = _selector(after)
    selected = [
        (name, module, parent, attribute)
        for name, module, parent, attribute in walk(original(model))
        if select(name, original(module))
    ]
    if not selected:
        raise ValueError(
            f"after={after!r} matches no submodule of {type(model).__name__}; names look like {_sample_names(model)}"
        )
    for name, module, _, _ in selected:
        check_insertable(name, module, AttentionAfter)
    channels = _channels(model, [(name, original(module)) for name, module, _, _ in selected], example_input)
    common = math.gcd(*channels.values())
    layers = [
        _build(factory, layer, name, module, channels[name], common, layer_kwargs, model)
        for name, module, _, _ in selected
    ]
    # Deepest first, so a selected module inside another selected module is wrapped before its parent is.
    for (_name, module, parent, attribute), new_layer in sorted(
        zip(selected, layers), key=lambda s: -s[0][0].count(".")
    ):
        setattr(parent, attribute, AttentionAfter(module, new_layer))
    return [InsertedAttention(name, channels[name], new_layer) for (name, *_), new_layer in zip(selected, layers)]


def remove_attention(model: nn.Module) -> list[str]:
    """Take out every layer :func:`add_attention` and :func:`sgau_skips` inserted into ``model``, in place.

    Afterwards the model holds its original modules again: its outputs and state-dict keys are those it had
    before the insertions. (When ``model`` is itself such a container, what it holds is restored; to get the
    original module, use its ``module`` attribute.)

    Returns:
        The names of the submodules that had a layer (empty when there were none).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    removed = [name for name, module, _, _ in walk(original(model)) if isinstance(module, InsertedModule)]
    for _, module, parent, attribute in list(walk(original(model))):
        if isinstance(module, InsertedModule):
            setattr(parent, attribute, original(module))
    return removed


def _selector(after: Any) -> Callable[[str, nn.Module], bool]:
    """``after`` as a predicate ``(name, module) -> bool``."""
    if isinstance(after, type) and issubclass(after, nn.Module):
        return lambda name, module: isinstance(module, after)
    if isinstance(after, tuple) and after and all(isinstance(a, type) and issubclass(a, nn.Module) for a in after):
        return lambda name, module: isinstance(module, after)
    if isinstance(after, str):
        if not after:
            raise ValueError("after must not be an empty pattern")
        pattern = after.split(".")
        return lambda name, module: _match_names(pattern, name.split("."))
    if callable(after) and not isinstance(after, nn.Module):
        return lambda name, module: bool(after(name, module))
    raise TypeError(
        f"after must be a module class, a tuple of module classes, a name pattern (str) or a predicate "
        f"(name, module) -> bool, got {after!r}"
    )


def _match_names(pattern: Sequence[str], names: Sequence[str]) -> bool:
    """Match dotted names part by part: ``*`` within one part, ``**`` for any number of parts."""
    if not pattern:
        return not names
    if pattern[0] == "**":
        return any(_match_names(pattern[1:], names[skip:]) for skip in range(len(names) + 1))
    return bool(names) and fnmatch.fnmatchcase(names[0], pattern[0]) and _match_names(pattern[1:], names[1:])


def _sample_names(model: nn.Module, count: int = 6) -> list[str]:
    return [name for name, *_ in walk(original(model))][:count]


def declared_channels(module: nn.Module) -> int | None:
    """The output channels ``module`` declares, or None when it does not say."""
    for attribute in ("out_channels", "num_features", "num_channels", "out_features"):
        value = getattr(module, attribute, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    kind = (type(module).__module__, type(module).__qualname__)
    if kind in _BLOCK_OUTPUT:
        return declared_channels(getattr(module, _BLOCK_OUTPUT[kind]))
    if isinstance(module, nn.Sequential):
        for member in reversed(list(module)):
            member_channels = declared_channels(original(member))
            if member_channels is not None:
                return member_channels
            if not isinstance(member, _CHANNEL_PRESERVING):
                return None
    return None


def _channels(model: nn.Module, selected: list[tuple[str, nn.Module]], example_input: Any) -> dict[str, int]:
    """Channels per selected name: declared, else measured by one dry-run forward of ``example_input``."""
    channels = {name: declared_channels(module) for name, module in selected}
    unknown = [(name, module) for name, module in selected if channels[name] is None]
    if not unknown:
        return channels
    if example_input is None:
        names = ", ".join(f"{name!r} ({type(module).__name__})" for name, module in unknown[:5])
        raise ValueError(
            f"cannot tell the output channels of {len(unknown)} selected submodule(s) ({names}"
            f"{', ...' if len(unknown) > 5 else ''}): pass example_input=<an input of the model> so "
            f"one forward pass can measure them"
        )
    measured = _dry_run(model, [module for _, module in unknown], example_input)
    for name, module in unknown:
        if id(module) not in measured:
            raise ValueError(
                f"submodule {name!r} ({type(module).__name__}) was not called by the forward pass of "
                f"example_input, so its channels are unknown; select submodules the model uses"
            )
        shape = measured[id(module)]
        if shape is None or len(shape) < 3:
            raise ValueError(
                f"submodule {name!r} ({type(module).__name__}) returned "
                f"{'no tensor' if shape is None else f'shape {tuple(shape)}'}; attention layers need "
                f"(B, C, *spatial) feature maps"
            )
        channels[name] = shape[1]
    return channels


def _dry_run(model: nn.Module, modules: list[nn.Module], example_input: Any) -> dict[int, torch.Size | None]:
    """The output shape of each of ``modules`` in one eval-mode, no-grad forward of ``example_input``."""
    shapes: dict[int, torch.Size | None] = {}

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        shapes.setdefault(id(module), output.shape if isinstance(output, torch.Tensor) else None)

    modes = {module: module.training for module in model.modules()}
    handles = [module.register_forward_hook(record) for module in modules]
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    try:
        model.eval()
        with torch.no_grad():
            model(*args)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return shapes


def _build(
    factory: Callable[..., nn.Module],
    layer: Any,
    name: str,
    module: nn.Module,
    channels: int,
    common: int,
    layer_kwargs: dict[str, Any],
    model: nn.Module,
) -> nn.Module:
    """``factory(channels, **layer_kwargs)`` on ``module``'s device and dtype; errors name the submodule and, for
    ``groups``, suggest the largest that divides ``common`` (the channels' greatest common divisor)."""
    try:
        new_layer = factory(channels, **layer_kwargs)
    except ValueError as error:
        hint = ""
        groups = layer_kwargs.get("groups", _default(factory, "groups"))
        if isinstance(groups, int) and groups > 0 and channels % groups:
            fitting = max(d for d in divisors(common) if d <= groups)
            hint = (
                f"; pass groups={fitting} (it divides the channels of every selected submodule), or narrow "
                f"`after` to leave {name!r} out"
            )
        raise ValueError(
            f"cannot put {getattr(layer, '__name__', layer)!r} after {name!r} "
            f"({type(module).__name__}, {channels} channels): {error}{hint}"
        ) from error
    reference = next(module.parameters(), None)
    if reference is None:
        reference = next(model.parameters(), None)
    if reference is not None:
        new_layer = new_layer.to(device=reference.device)
        if reference.is_floating_point():
            new_layer = new_layer.to(dtype=reference.dtype)
    return new_layer


def _default(factory: Callable[..., Any], argument: str) -> Any:
    """The default of ``factory``'s ``argument``, or None."""
    try:
        parameter = inspect.signature(factory).parameters.get(argument)
    except (TypeError, ValueError):
        return None
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default
