"""The documentation: every public name has an entry in the API pages, and the site builds with warnings as errors."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import group_attention

DOCS = Path(__file__).resolve().parents[1] / "docs"
API_PAGES = sorted((DOCS / "api").glob("*.rst"))

# The modules users import from; every name in their __all__ must be documented (under any path to the same object).
PUBLIC_MODULES = [
    "group_attention",
    "group_attention.models",
    "group_attention.losses",
    "group_attention.metrics",
    "group_attention.inference",
    "group_attention.fundus",
    "group_attention.fundus.data",
    "group_attention.fundus.engine",
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
                for option in lines[index + 1 :]:
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


def test_the_core_lists_in_all_only_what_the_api_reference_documents():
    """``__all__`` names what a user calls: fused Functions, Triton launchers and other helpers stay out of it."""
    documented = {id(obj) for obj in documented_objects()}
    undocumented = {}
    for info in pkgutil.walk_packages(group_attention.__path__, "group_attention."):
        if info.name.startswith("group_attention.fundus") or info.name.endswith("__main__"):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # the Triton kernels, where Triton is not installed
            continue
        names = [name for name in getattr(module, "__all__", ()) if id(getattr(module, name)) not in documented]
        if names:
            undocumented[info.name] = names
    assert not undocumented, f"__all__ names without an entry in docs/api/*.rst: {undocumented}"


@pytest.fixture(scope="module")
def built_site(tmp_path_factory) -> "tuple[int, Path]":
    """The docs built once with warnings as errors: (sphinx's exit status, the HTML folder)."""
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    pytest.importorskip("furo")
    pytest.importorskip("sphinx-mathjax-offline")
    from sphinx.cmd.build import build_main

    folder = tmp_path_factory.mktemp("docs")
    status = build_main(
        ["-W", "--keep-going", "-q", "-b", "html", "-d", str(folder / "doctrees"), str(DOCS), str(folder / "html")]
    )
    return status, folder / "html"


# About 5 s on an idle machine, so not marked slow. Sphinx and MyST warn about their own deprecated internals.
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::PendingDeprecationWarning")
def test_sphinx_build_has_no_warnings(built_site):
    status, html = built_site
    assert status == 0, "sphinx-build -W failed: see the warnings above"
    assert (html / "paper_to_code.html").exists()


# src= and href= of the tags a browser fetches by itself (scripts, stylesheets, fonts, icons), and CSS url(...).
_FETCHED = re.compile(r"<(?:script|link|img|iframe|source)\b[^>]*?\b(?:src|href)\s*=\s*[\"']([^\"']+)[\"']", re.I)
_CSS_URL = re.compile(r"url\(\s*[\"']?([^)\"']+)")


def _remote(address: str) -> bool:
    return bool(re.match(r"^(?:[a-z][a-z0-9+.-]*:)?//", address, re.I))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::PendingDeprecationWarning")
def test_built_docs_load_nothing_from_another_host(built_site):
    status, html = built_site
    assert status == 0
    remote = []
    for page in html.rglob("*.html"):
        text = page.read_text(errors="replace")
        for match in _FETCHED.finditer(text):
            tag = match.group(0).lower()
            # <link rel="next|prev|index|search|canonical"> are navigation, not fetched
            if tag.startswith("<link") and not re.search(
                r"rel=[\"'][^\"']*(stylesheet|icon|preload|modulepreload)", tag
            ):
                continue
            if _remote(match.group(1)):
                remote.append((page.name, match.group(1)))
    for sheet in html.rglob("*.css"):
        remote += [(sheet.name, url) for url in _CSS_URL.findall(sheet.read_text(errors="replace")) if _remote(url)]
    assert not remote, f"pages fetch from other hosts: {remote[:10]}"
    math_page = (html / "paper_to_code.html").read_text()
    assert 'src="_static/mathjax/tex-chtml.js"' in math_page  # the bundled renderer is the one loaded
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert (html / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()


def test_docs_configuration_bundles_the_math_renderer():
    conf = (DOCS / "conf.py").read_text()
    assert '"sphinx-mathjax-offline"' in conf and "mathjax_path" not in conf
    pyproject = (DOCS.parent / "pyproject.toml").read_text()
    docs_extra = pyproject[pyproject.index("\ndocs = [") :]
    assert "sphinx-mathjax-offline" in docs_extra[: docs_extra.index("]")]
