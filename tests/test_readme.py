"""The README's promises: its Python tour runs as written, its commands exist."""

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_the_tour_runs_as_written(capsys):
    (tour,) = _blocks("python")
    namespace = {}
    exec(compile(tour, "README.md (quick tour)", "exec"), namespace)
    out = capsys.readouterr().out
    assert "CollapseReport(n_classes=10" in out
    assert "5-way 5-shot:" in out
    search = namespace["search"]
    assert search.best_params_["method"] in {"linear-probe", "layer-ft", "scl-ft", "full-ft"}
    assert 0.0 < search.best_estimator_.trainable_fraction_ <= 1.0
    assert set(namespace["scores"]) >= {"test_acc", "train_acc", "test_nc1", "train_nc1"}


def test_readme_shell_commands_name_real_things():
    commands = [
        line.strip() for block in _blocks("bash") for line in block.splitlines() if line.strip()
    ]
    assert commands, "the README has no shell commands"
    for command in commands:
        for part in command.split("&&"):
            words = shlex.split(part)
            if words[0] == ".venv/bin/python" and words[1:2] and words[1].endswith(".py"):
                assert (ROOT / words[1]).is_file(), part
            if words[0] == ".venv/bin/sknc":
                from sknc.cli import build_parser

                args = build_parser().parse_args(words[1:])  # command and options exist
                assert args.command == words[1], part
            if "pip" in words[0] and "-e" in words:
                extra = words[words.index("-e") + 1]
                m = re.fullmatch(r"\.(?:\[([a-z,]+)\])?", extra)
                assert m, part
                pyproject = (ROOT / "pyproject.toml").read_text()
                for name in (m.group(1) or "").split(","):
                    if name:
                        assert re.search(rf"^{name} = \[", pyproject, flags=re.M), name


@pytest.mark.parametrize("path", re.findall(r"`(benchmarks/[\w./]+\.py)`", README))
def test_benchmark_scripts_named_in_the_readme_exist(path):
    assert (ROOT / path).is_file()
