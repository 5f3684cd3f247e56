"""The reproductions record the code revision that actually ran (benchmarks/_repro_common.py)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

if shutil.which("git") is None:  # pragma: no cover - git is on every CI runner
    pytest.skip("git is not installed", allow_module_level=True)

rc = pytest.importorskip("_repro_common")


def _git(repo, *args):
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@example.com")
    _git(tmp_path, "config", "user.name", "t")
    (tmp_path / "sknc").mkdir()
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "sknc" / "a.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "run.py").write_text("y = 1\n")
    (tmp_path / ".gitignore").write_text("benchmarks/results/\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-q", "-m", "one")
    return tmp_path


def test_clean_tree(repo):
    rev = rc.code_revision(repo)
    assert rev["commit"] == _git(repo, "rev-parse", "HEAD")
    assert rev["git"] == _git(repo, "rev-parse", "--short", "HEAD")
    assert rev["changed"] == []
    assert rev["trees"]["sknc"] == _git(repo, "rev-parse", "HEAD:sknc")


def test_changes_are_flagged(repo):
    (repo / "benchmarks" / "results").mkdir()
    (repo / "benchmarks" / "results" / "out.json").write_text("{}")  # ignored
    (repo / "notes.txt").write_text("not code")  # untracked outside the code folders
    (repo / ".gitignore").write_text("benchmarks/results/\n*.log\n")  # tracked, not code
    assert rc.code_revision(repo)["changed"] == []
    (repo / "sknc" / "new.py").write_text("z = 1\n")  # untracked code
    (repo / "benchmarks" / "run.py").write_text("y = 2\n")  # modified
    rev = rc.code_revision(repo)
    assert rev["git"].endswith("+dirty")
    assert sorted(rev["changed"]) == ["benchmarks/run.py", "sknc/new.py"]


def test_trees_survive_a_rewritten_commit(repo):
    before = rc.code_revision(repo)
    _git(repo, "commit", "-q", "--amend", "-m", "reworded")  # what a rebase does to a hash
    after = rc.code_revision(repo)
    assert after["commit"] != before["commit"]
    assert after["trees"] == before["trees"]


def test_revision_is_taken_at_the_start_and_checked_at_the_end(repo):
    start = rc.code_revision(repo)
    assert rc.revision_at_end(start, repo) == start  # nothing changed
    (repo / "sknc" / "a.py").write_text("x = 2\n")
    _git(repo, "commit", "-q", "-am", "two")  # committed while the run ran
    out = rc.revision_at_end(start, repo)
    assert out["commit"] == start["commit"]  # what ran
    assert out["at_end"]["commit"] == _git(repo, "rev-parse", "HEAD")
    env = rc.environment(start)
    assert env["git"] == start["git"]


def test_a_commit_outside_the_code_is_not_a_change(repo):
    start = rc.code_revision(repo)
    (repo / "README.md").write_text("docs\n")
    assert rc.revision_at_end(start, repo) == start
    _git(repo, "add", "README.md")
    _git(repo, "commit", "-q", "-m", "docs")
    assert "at_end" not in rc.revision_at_end(start, repo)


def test_no_git_gives_none(tmp_path):
    assert rc.code_revision(tmp_path) is None
    assert rc.revision_at_end(None) is None


@pytest.mark.parametrize(
    "script", ["reproduce_transferability", "reproduce_galanti", "reproduce_li"]
)
def test_reproduction_takes_the_revision_at_its_start_and_records_it(script):
    """``main`` reads ``rc.code_revision()`` before its first log line (before any work) and
    stores it through ``rc.environment(revision)`` and ``rc.revision_at_end(revision)``."""
    import ast

    tree = ast.parse((ROOT / "benchmarks" / f"{script}.py").read_text(encoding="utf-8"))
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    calls = {}
    for node in ast.walk(main):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if isinstance(node.func.value, ast.Name) and node.func.value.id == "rc":
                calls.setdefault(node.func.attr, []).append(node)
    (start,) = calls.get("code_revision", [None])
    assert start is not None, f"{script}.main does not call rc.code_revision()"
    assert start.lineno < min(c.lineno for c in calls["log"])
    for name in ("environment", "revision_at_end"):
        (call,) = calls[name]
        assert [ast.unparse(a) for a in call.args] == ["revision"], ast.unparse(call)
