"""Every documented make target resolves: ``make -n -B TARGET`` (a dry run that rebuilds nothing) finds a rule for
each prerequisite. A prerequisite whose variable is defined further down the Makefile expands to an empty folder
when make reads the rule and fails only on a fresh machine, so this is checked here rather than left to CI."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _phony_targets() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    match = re.search(r"^\.PHONY:(.*)$", text, re.MULTILINE)
    assert match, "the Makefile declares its targets in a .PHONY line"
    return match.group(1).split()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target", _phony_targets())
def test_every_make_target_resolves(target: str) -> None:
    result = subprocess.run(["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"make {target}: {result.stderr.strip()}"
    assert "No rule" not in result.stderr


def test_the_phony_line_names_the_readme_commands() -> None:
    targets = _phony_targets()
    for name in ("install", "test", "demo"):
        assert name in targets
