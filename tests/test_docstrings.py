"""Every docstring example in sknc runs and shows what it says.

Collects each module of the package (private implementation modules
included, since that is where the public objects' docstrings live) and runs
the doctests of the objects *defined* in it, so an example is checked once,
where it is written. Examples that download weights or need an optional
extra are guarded in the docstring itself (``# doctest: +SKIP`` with a note).
"""

import doctest
import importlib
import pkgutil
import warnings

import pytest

import sknc

OPTIONAL = {  # module prefix -> the extra it needs
    "sknc.parallel": "dask",
    "sknc.features._text": "transformers",
    "sknc.finetune._text": "transformers",
}


def _modules():
    names = []
    for info in pkgutil.walk_packages(sknc.__path__, prefix="sknc."):
        if info.name in {"sknc.__main__"}:
            continue
        names.append(info.name)
    return sorted(names)


def _needs(name):
    for prefix, extra in OPTIONAL.items():
        if name.startswith(prefix):
            return extra
    return None


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name, tmp_path, monkeypatch):
    extra = _needs(name)
    if extra is not None:
        pytest.importorskip(extra)
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    tests = [t for t in finder.find(module, name) if t.examples]
    # only the objects defined in this module: re-exports are checked at home
    tests = [
        t
        for t in tests
        if t.name == name
        or getattr(_resolve(module, t.name[len(name) + 1 :]), "__module__", name) == name
    ]
    if not tests:
        pytest.skip(f"{name} has no docstring examples")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # examples show results; warnings are tested elsewhere
        for test in tests:
            runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


def _resolve(module, dotted):
    obj = module
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def test_examples_are_collected():
    """The collection above finds the examples (a broken walk would skip them all)."""
    with_examples = set()
    for name in _modules():
        if _needs(name) is not None:
            continue
        module = importlib.import_module(name)
        if any(t.examples for t in doctest.DocTestFinder().find(module, name)):
            with_examples.add(name)
    for name in [
        "sknc.metrics._collapse",
        "sknc.metrics._scorer",
        "sknc.finetune._estimator",
        "sknc.datasets._digits",
        "sknc.features._backbone_features",
        "sknc.model_selection._fewshot",
    ]:
        assert name in with_examples
