"""The worked examples of docs/using_in_your_model.md run as written (each ends with a training step)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "using_in_your_model.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", PAGE.read_text(), flags=re.DOTALL | re.MULTILINE)
FRAMEWORKS = {"timm": "timm", "torchvision": "torchvision", "smp": "segmentation_models_pytorch", "monai": "monai"}


def test_the_page_has_one_example_per_framework():
    assert len(BLOCKS) == 4
    for module in FRAMEWORKS.values():
        assert any(f"import {module}" in block or f"from {module}" in block for block in BLOCKS), module


# Together about 10 s on two busy cores (a ResNet-50 and a 3D U-Net step); the unit tests cover the same calls.
@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=list(FRAMEWORKS))
def test_docs_example_runs(block):
    for module in FRAMEWORKS.values():
        if module in block:
            pytest.importorskip(module)
    exec(compile(block, str(PAGE), "exec"), {"__name__": "docs_example"})
