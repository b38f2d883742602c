"""The README's loss example runs as written, and its test command is the one CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_loss_example_runs_and_trains(capsys):
    (example,) = [b for b in python_blocks() if "build_loss" in b]
    assert len(example.strip().splitlines()) <= 10
    namespace: dict = {}
    exec(compile(example, str(README), "exec"), namespace)
    grad = namespace["chosen_logps"].grad
    assert grad is not None and torch.isfinite(grad).all() and (grad < 0).all()  # raising log pi_w lowers the loss
    assert "tensor(" in capsys.readouterr().out


def test_ci_installs_and_tests_with_the_readme_commands_in_a_fresh_environment():
    bash_blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    install_command, test_command = bash_blocks[0].strip().splitlines()[:2]
    ci_lines = [line.split("  #")[0].strip() for line in (README.parent / ".ci" / "run").read_text().splitlines()]
    venv = next(i for i, line in enumerate(ci_lines) if line.startswith("python -m venv"))
    activated = next(i for i, line in enumerate(ci_lines) if line.startswith("source") and "/bin/activate" in line)
    installed = ci_lines.index(install_command)  # as written, not a variant of it
    tested = next(i for i, line in enumerate(ci_lines) if line.startswith(test_command))
    assert venv < activated < installed < tested  # what the machine had installed by hand is not seen
