"""The documentation: every public name has an entry in the API pages, and the site builds with warnings as errors."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
API_PAGES = sorted((DOCS / "api").glob("*.rst"))

# The modules users import from; every name in their __all__ must be documented (under any path to the same object).
PUBLIC_MODULES = [
    "group_attention",
    "group_attention.models",
    "group_attention.losses",
    "group_attention.metrics",
    "group_attention.data",
    "group_attention.engine",
]

_OBJECT_DIRECTIVE = re.compile(
    r"^\.\. (?:auto(?:class|function|data|exception)|py:(?:class|function|data|exception))::\s+(\S+)"
)
_MODULE_DIRECTIVE = re.compile(r"^\.\. (automodule|currentmodule)::\s+(\S+)")


def documented_objects() -> list[object]:
    """The objects the API pages document: one per object directive, and ``__all__`` of each automodule with
    members (``:members:`` is a default option in ``docs/conf.py``, ``:no-members:`` turns it off)."""
    objects: list[object] = []
    for page in API_PAGES:
        lines = page.read_text().splitlines()
        current = None
        for index, line in enumerate(lines):
            module_match = _MODULE_DIRECTIVE.match(line)
            if module_match:
                kind, current = module_match.groups()
                options = []
                for option in lines[index + 1:]:
                    if not option.startswith("   :"):
                        break
                    options.append(option.strip())
                if kind == "automodule" and ":no-members:" not in options:
                    module = importlib.import_module(current)
                    objects += [getattr(module, name) for name in module.__all__]
                continue
            object_match = _OBJECT_DIRECTIVE.match(line)
            if object_match:
                name = object_match.group(1)
                qualified = name if name.startswith("group_attention") or current is None else f"{current}.{name}"
                module_name, _, attribute = qualified.rpartition(".")
                objects.append(getattr(importlib.import_module(module_name), attribute))
    return objects


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_is_in_the_api_reference(module_name):
    module = importlib.import_module(module_name)
    documented = {id(obj) for obj in documented_objects()}
    missing = [name for name in module.__all__ if id(getattr(module, name)) not in documented]
    assert not missing, f"{module_name}.__all__ names without an entry in docs/api/*.rst: {missing}"


# About 5 s, so not marked slow. Sphinx and MyST warn about their own deprecated internals; those are not ours.
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::PendingDeprecationWarning")
def test_sphinx_build_has_no_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    pytest.importorskip("furo")
    from sphinx.cmd.build import build_main

    status = build_main(["-W", "--keep-going", "-q", "-b", "html", "-d", str(tmp_path / "doctrees"),
                         str(DOCS), str(tmp_path / "html")])
    assert status == 0, "sphinx-build -W failed: see the warnings above"
    assert (tmp_path / "html" / "paper_to_code.html").exists()
