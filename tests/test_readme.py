"""Every code block of README.md works as written: Python blocks run on their own (each in a fresh namespace), and
every command line of the example in a shell block is accepted by the example's own argument parser."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import torch

from group_attention._compat import needs_torch

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", README, flags=re.S | re.M)
PYTHON_BLOCKS = [code for language, code in BLOCKS if language == "python"]
SHELL_BLOCKS = [code for language, code in BLOCKS if language in ("bash", "sh", "shell", "console")]


def test_the_readme_has_the_blocks_this_test_reads():
    assert len(PYTHON_BLOCKS) >= 4 and len(SHELL_BLOCKS) >= 2
    assert {language for language, _ in BLOCKS} <= {"python", "bash", "bibtex", "text"}  # text: sample output


@pytest.mark.parametrize("code", PYTHON_BLOCKS, ids=[f"python-block-{i + 1}" for i in range(len(PYTHON_BLOCKS))])
def test_every_python_block_runs_on_its_own(code):
    if "Dim.DYNAMIC" in code and not hasattr(torch.export.Dim, "DYNAMIC"):
        pytest.skip(str(needs_torch((2, 6), "torch.export.Dim.DYNAMIC")))
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})


def example_command_lines() -> list[list[str]]:
    """The arguments of every ``examples/idrid_ganet.py`` command in the shell blocks (comments dropped)."""
    commands = []
    for block in SHELL_BLOCKS:
        for line in block.splitlines():
            for part in re.split(r"&&|;", line.split(" #")[0]):
                words = shlex.split(part)
                if "examples/idrid_ganet.py" in words:
                    commands.append(words[words.index("examples/idrid_ganet.py") + 1 :])
    return commands


def test_every_example_command_in_the_readme_parses():
    spec = importlib.util.spec_from_file_location("idrid_ganet_readme", REPO / "examples" / "idrid_ganet.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    commands = example_command_lines()
    assert len(commands) >= 4
    for arguments in commands:
        parsed = example.parse_arguments(arguments)  # argparse exits on an unknown option or a bad value
        example.build_config(parsed)  # and the settings are valid ones
