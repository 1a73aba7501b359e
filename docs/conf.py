"""Sphinx configuration for the group-attention documentation.

Build locally (what CI runs, warnings are errors):

    pip install -e ".[docs]"
    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import sys
from pathlib import Path

# Document the checkout this file belongs to, even where another copy of the package is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import group_attention  # noqa: E402

project = "group-attention"
author = "group-attention developers"
copyright = "group-attention developers"
release = group_attention.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
    # MathJax shipped inside the built site (_static/mathjax): equations render without a network.
    "sphinx-mathjax-offline",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# Included into other pages with {include}, never pages of their own: the engineers' notes (_notes_*.md) and the
# sample outputs of the example in _static/ (synthetic-results.md and its pictures).
exclude_patterns = ["_build", "_notes_*", "_static", "Thumbs.db", ".DS_Store"]

# -- autodoc / napoleon ------------------------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "signature"
autodoc_mock_imports: list[str] = []  # everything the package imports is installed with it
autoclass_content = "class"
# forward() and extra_repr() would otherwise show torch.nn.Module's generic docstrings.
autodoc_inherit_docstrings = False
python_maximum_signature_line_length = 100

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_custom_sections = ["Shape", "Items"]

nitpicky = False

# -- MyST --------------------------------------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

# -- HTML --------------------------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"group-attention {release}"
html_show_sourcelink = True

# No intersphinx: builds must not need the network; nor must the built pages (no script, stylesheet or font from
# another host: tests/test_docs.py checks).


# -- the layer list, generated from the registry -------------------------------------------------------------------
# A layer added to group_attention.registry appears on the API page without a hand edit (docs/contributing.md).
def write_layer_list(app) -> None:
    from group_attention.registry import ATTENTION_LAYERS, SKIP_CONNECTIONS

    def first_line(text: "str | None") -> str:
        return (text or "").strip().splitlines()[0].rstrip(".") if text and text.strip() else ""

    rows = []
    for kind, registry in (("encoder attention", ATTENTION_LAYERS), ("skip connection", SKIP_CONNECTIONS)):
        for name, cls in registry.items():
            source = first_line(sys.modules[cls.__module__].__doc__).replace("\n", " ")
            rows.append(
                f"   * - ``{name!r}``\n     - :class:`~{cls.__module__}.{cls.__name__}`\n     - {kind}\n"
                f"     - {first_line(cls.__doc__)}\n     - {source}"
            )
    text = (
        ".. list-table::\n   :header-rows: 1\n   :widths: 10 12 13 35 30\n\n"
        "   * - Name\n     - Class\n     - Kind\n     - What it does\n     - From\n" + "\n".join(rows) + "\n"
    )
    target = Path(app.srcdir) / "api" / "_layer_list.rst"
    if not target.exists() or target.read_text() != text:
        target.write_text(text)


def setup(app) -> None:
    app.connect("builder-inited", write_layer_list)
