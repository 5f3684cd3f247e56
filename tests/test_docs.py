"""Tests of the documentation: user-guide doctests, API coverage, gallery rules.

The full Sphinx build (``-W``, warnings as errors) is the ``slow`` test at the
end; CI runs the same command directly.
"""

import doctest
import importlib
import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
GENERATED = {"_build", "gen_modules", "auto_examples"}

# modules whose public names need not appear in the API reference: the command
# line entry points (documented on their own user-guide page)
NOT_IN_API = {"sknc.cli", "sknc.__main__"}


def _public_modules():
    """Every public subpackage and top-level module of sknc with an ``__all__``."""
    names = []
    for path in sorted((ROOT / "sknc").iterdir()):
        if path.name.startswith("_"):
            continue
        if path.is_dir() and (path / "__init__.py").is_file():
            names.append(f"sknc.{path.name}")
        elif path.suffix == ".py":
            names.append(f"sknc.{path.stem}")
    return [n for n in names if n not in NOT_IN_API]


PUBLIC_MODULES = _public_modules()


def _doc_pages():
    pages = []
    for path in sorted(DOCS.rglob("*.rst")):
        if GENERATED & set(path.relative_to(DOCS).parts):
            continue
        pages.append(path)
    return pages


def _pages_with_doctests():
    return [p for p in _doc_pages() if ">>> " in p.read_text(encoding="utf-8")]


def test_docs_tree_exists():
    for name in [
        "conf.py",
        "index.rst",
        "api.rst",
        "getting_started.rst",
        "contributing.rst",
        "references.rst",
        "user_guide/index.rst",
    ]:
        assert (DOCS / name).is_file(), name
    assert (EXAMPLES / "README.rst").is_file()
    # the user guide pages with runnable code are found (guards the glob above)
    names = {p.relative_to(DOCS).as_posix() for p in _pages_with_doctests()}
    assert {"getting_started.rst", "user_guide/metrics.rst"} <= names


# the user guide uses random-init backbones (no download)
@pytest.mark.filterwarnings("ignore::sknc.utils.RandomWeightsWarning")
@pytest.mark.parametrize(
    "page", _pages_with_doctests(), ids=lambda p: p.relative_to(DOCS).as_posix()
)
def test_user_guide_code_runs(page, tmp_path, monkeypatch):
    """Every ``>>>`` example of the docs runs and prints what the page shows."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKNC_DATA", str(tmp_path / "sknc_data"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    result = doctest.testfile(
        str(page),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        verbose=False,
        report=True,
    )
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} example(s) of {page.name} failed"


def _api_rst_names():
    """(module, name) pairs listed in the autosummary tables of api.rst."""
    text = (DOCS / "api.rst").read_text(encoding="utf-8")
    names = set()
    module = None
    in_table = False
    for line in text.splitlines():
        m = re.match(r"\.\. currentmodule:: (\S+)", line)
        if m:
            module = m.group(1)
            continue
        if line.startswith(".. autosummary::"):
            in_table = True
            continue
        if in_table:
            if line.startswith("   :") or not line.strip():
                continue
            if line.startswith("   "):
                names.add((module, line.strip()))
                continue
            in_table = False
    return names


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_api_reference_lists_every_public_name(module_name):
    module = importlib.import_module(module_name)
    public = set(getattr(module, "__all__", []))
    if not public:
        pytest.skip(f"{module_name} has no __all__")
    listed = {name for mod, name in _api_rst_names() if mod == module_name}
    missing = sorted(public - listed)
    assert not missing, f"add {missing} to docs/api.rst ({module_name} section)"
    unknown = sorted(listed - public)
    assert not unknown, f"docs/api.rst lists {unknown}, not in {module_name}.__all__"


def test_every_public_module_has_an_api_section():
    listed = {mod for mod, _ in _api_rst_names()}
    missing = [
        name
        for name in PUBLIC_MODULES
        if getattr(importlib.import_module(name), "__all__", None) and name not in listed
    ]
    assert not missing, f"modules without an API section in docs/api.rst: {missing}"


def _examples():
    return sorted(EXAMPLES.glob("*.py"))


def test_gallery_examples_follow_naming_convention():
    assert _examples(), "the gallery has no examples"
    for path in _examples():
        assert re.match(r"(plot|long)_\w+\.py$|_", path.name), (
            f"{path.name}: gallery examples are named plot_*.py (run at every docs "
            "build) or long_*.py (run with SKNC_DOCS_EXECUTE_ALL=1); helpers start "
            "with '_'"
        )


@pytest.mark.parametrize("path", _examples(), ids=lambda p: p.name)
def test_gallery_example_has_title_docstring(path):
    if path.name.startswith("_"):
        pytest.skip("helper module")
    text = path.read_text(encoding="utf-8")
    m = re.match(r'\s*"""\n(=+)\n(.+)\n(=+)\n', text)
    assert m, f"{path.name} must start with a docstring whose first lines are a title"
    assert len(m.group(1)) >= len(m.group(2).rstrip()), f"{path.name}: title overline too short"
    assert len(m.group(3)) >= len(m.group(2).rstrip()), f"{path.name}: title underline too short"


def _gallery_conf(monkeypatch, execute_all):
    if execute_all:
        monkeypatch.setenv("SKNC_DOCS_EXECUTE_ALL", "1")
    else:
        monkeypatch.delenv("SKNC_DOCS_EXECUTE_ALL", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return runpy.run_path(str(DOCS / "conf.py"))["sphinx_gallery_conf"]


@pytest.mark.parametrize("execute_all", [False, True])
def test_gallery_execution_pattern(monkeypatch, execute_all):
    conf = _gallery_conf(monkeypatch, execute_all)
    pattern = re.compile(conf["filename_pattern"])
    ignore = re.compile(conf["ignore_pattern"])
    sep = os.sep
    quick = f"..{sep}examples{sep}plot_nc_synthetic.py"
    long_ = f"..{sep}examples{sep}long_finetune.py"
    helper = f"..{sep}examples{sep}_common.py"
    assert pattern.search(quick)
    assert bool(pattern.search(long_)) is execute_all
    assert ignore.search(helper)
    assert not ignore.search(quick) and not ignore.search(long_)


@pytest.mark.slow
def test_sphinx_build_without_warnings(tmp_path):
    """The documented build command succeeds with warnings as errors."""
    pytest.importorskip("sphinx")
    pytest.importorskip("sphinx_gallery")
    pytest.importorskip("numpydoc")
    pytest.importorskip("pydata_sphinx_theme")
    for name in ("gen_modules", "auto_examples"):
        shutil.rmtree(DOCS / name, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "--keep-going",
        "-b",
        "html",
        "-d",
        str(tmp_path / "doctrees"),
        str(DOCS),
        str(tmp_path / "html"),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    assert (tmp_path / "html" / "index.html").is_file()
    assert (tmp_path / "html" / "auto_examples" / "index.html").is_file()
