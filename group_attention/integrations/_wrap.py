"""The container that puts a module of this library beside an existing module without renaming its weights.

Wrapping ``model.layer1[0]`` in a container would move its parameters from ``layer1.0.conv1.weight`` to
``layer1.0.module.conv1.weight``; :class:`InsertedModule` renames them back whenever a state dict is saved or loaded,
so pretrained checkpoints of the original model load by their own keys and the only new keys are the inserted
layer's (``layer1.0.<inserted_name>.*``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import nn

WRAPPED = "module"  # the attribute holding the original module (its keys are saved without this segment)


class InsertedModule(nn.Module):
    """Base of the containers that :func:`add_attention` and :func:`sgau_skips` insert: ``module`` is the original
    module, ``inserted_name`` names the one child that was added. Subclasses define ``forward``.

    Its ``state_dict`` has the original module's keys, unchanged, plus the added child's under
    ``<inserted_name>.``; ``load_state_dict`` accepts the same. Attributes it does not have itself (``out_channels``,
    ``weight``...) are read from the original module, so code that inspects the module keeps working.
    """

    inserted_name: str = "inserted"  # subclasses name their child

    def __init__(self, module: nn.Module, inserted: nn.Module) -> None:
        super().__init__()
        if self.inserted_name in module._modules:
            raise ValueError(
                f"{type(module).__name__} already has a child named {self.inserted_name!r}; "
                f"cannot insert a layer under that name"
            )
        self.module = module
        self.add_module(self.inserted_name, inserted)
        self._register_state_dict_hook(_drop_wrapped_segment)
        self.register_load_state_dict_post_hook(_rename_missing_keys)
        self._load_prefix: str | None = None

    @property
    def inserted(self) -> nn.Module:
        """The added child (the attention layer)."""
        return self._modules[self.inserted_name]

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("_modules", WRAPPED) or WRAPPED not in self.__dict__.get("_modules", {}):
                raise
            return getattr(self._modules[WRAPPED], name)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        # The children are loaded from this same dict afterwards: point the original keys at the wrapped module.
        inserted_prefix, wrapped_prefix = prefix + self.inserted_name + ".", prefix + WRAPPED + "."
        for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(inserted_prefix)]:
            state_dict[wrapped_prefix + key[len(prefix) :]] = state_dict.pop(key)
        self._load_prefix = prefix
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


def _drop_wrapped_segment(module: InsertedModule, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """State-dict hook: ``<prefix>module.<key>`` -> ``<prefix><key>``, keeping the order of the keys."""
    wrapped_prefix = prefix + WRAPPED + "."
    keys = [k for k in state_dict if k.startswith(prefix)]  # all added by this module's state_dict call, in order
    for key in keys:
        value = state_dict.pop(key)
        state_dict[prefix + key[len(wrapped_prefix) :] if key.startswith(wrapped_prefix) else key] = value
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        for key in [k for k in metadata if k == prefix + WRAPPED or k.startswith(wrapped_prefix)]:
            renamed = prefix[:-1] if key == prefix + WRAPPED else prefix + key[len(wrapped_prefix) :]
            metadata[renamed] = metadata.pop(key)


def _rename_missing_keys(module: InsertedModule, incompatible_keys) -> None:
    """Load post-hook: report the original module's missing keys by their original names."""
    prefix = module._load_prefix
    if prefix is None:
        return
    wrapped_prefix = prefix + WRAPPED + "."
    keys = incompatible_keys.missing_keys
    keys[:] = [prefix + k[len(wrapped_prefix) :] if k.startswith(wrapped_prefix) else k for k in keys]


def walk(model: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module, nn.Module, str]]:
    """``(name, module, parent, attribute)`` for every submodule, named as in the original model.

    An :class:`InsertedModule` stands for the module it wraps (same name); the layers it added are not visited.
    """
    for attribute, child in model._modules.items():
        if child is None:
            continue
        name = f"{prefix}.{attribute}" if prefix else attribute
        yield name, child, model, attribute
        yield from walk(original(child), name)


def original(module: nn.Module) -> nn.Module:
    """The module as it was before any insertion: unwraps nested :class:`InsertedModule` containers."""
    while isinstance(module, InsertedModule):
        module = module.module
    return module


def check_insertable(name: str, module: nn.Module, container: type[InsertedModule]) -> None:
    """Raise ``ValueError`` if ``module`` (a submodule called ``name``) cannot be wrapped in ``container``: it
    already is, or it has a child of the name the container gives its inserted layer."""
    wrapped = module
    while isinstance(wrapped, InsertedModule):
        if isinstance(wrapped, container):
            raise ValueError(
                f"{name!r} already has a {type(wrapped.inserted).__name__} inserted "
                f"({container.__name__}); call remove_attention(model) first"
            )
        wrapped = wrapped.module
    if container.inserted_name in module._modules:
        raise ValueError(
            f"{name!r} ({type(module).__name__}) has a child named {container.inserted_name!r}, the "
            f"name {container.__name__} gives its layer"
        )
