"""House rules that tooling can check: readable function lengths, no private imports."""

import ast
import pathlib

import pytest

SKNC = pathlib.Path(__file__).resolve().parent.parent / "sknc"
MAX_LINES = 80
LONG_MARK = "# long:"


def code_lines(lines, node):
    """Lines of code of a function: not blank, not only a comment, not its docstring."""
    body = node.body
    skip = set()
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        skip = set(range(body[0].lineno, body[0].end_lineno + 1))
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
    count = 0
    for number in range(start, node.end_lineno + 1):
        text = lines[number - 1].strip()
        if number not in skip and text and not text.startswith("#"):
            count += 1
    return count


def long_reason(lines, node):
    """The text after ``# long:`` in the function (its signature or body), or None."""
    for number in range(node.lineno, node.end_lineno + 1):
        text = lines[number - 1]
        if LONG_MARK in text:
            return text.split(LONG_MARK, 1)[1].strip()
    return None


def long_functions(source):
    """``(name, line, code lines, reason or None)`` of every function over the limit."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = code_lines(lines, node)
            if n > MAX_LINES:
                found.append((node.name, node.lineno, n, long_reason(lines, node)))
    return found


def test_no_function_over_80_lines_without_a_reason():
    offenders = []
    for path in sorted(SKNC.rglob("*.py")):
        for name, line, n, reason in long_functions(path.read_text(encoding="utf-8")):
            if not reason:
                offenders.append(f"{path.relative_to(SKNC.parent)}:{line} {name} ({n} lines)")
    assert not offenders, (
        f"Functions over {MAX_LINES} lines of code; split them, or say why they read better "
        f"whole in a '{LONG_MARK} <reason>' comment inside them:\n" + "\n".join(offenders)
    )


def _function(n_body_lines, docstring=True, comment=None):
    head = ["def f(x):"]
    if docstring:
        head += ['    """Doc.', "", "    More doc.", '    """']
    if comment:
        head.append(f"    {comment}")
    body = [f"    x = x + {i}  # step" for i in range(n_body_lines - 1)] + ["    return x"]
    return "\n".join(head + ["", "    # a comment line", ""] + body) + "\n"


@pytest.mark.parametrize("n, expected", [(79, []), (80, [])])
def test_counting_leaves_out_docstring_comments_and_blank_lines(n, expected):
    # 1 def line + n body lines
    assert long_functions(_function(n - 1)) == expected


def test_counting_catches_a_long_function_and_reads_its_reason():
    assert long_functions(_function(80)) == [("f", 1, 81, None)]
    marked = _function(80, comment="# long: a table of declarations")
    assert long_functions(marked) == [("f", 1, 81, "a table of declarations")]
    assert long_functions(_function(80, comment="# long:")) == [("f", 1, 81, "")]


# private modules of dependencies sknc may import, each with its reason and
# a test that fails loudly when the dependency changes (see the module named)
PRIVATE_IMPORTS_ALLOWED = {
    # no public way to share features between the scorers of one scoring
    # round (sknc/utils/_sklearn_compat.py, tests/test_scorers.py)
    "sklearn.metrics._scorer",
}


def private_imports(source):
    """Modules of other packages imported by a private (``_``-prefixed) path."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] != "sknc" and any(p.startswith("_") and p != "__future__" for p in parts):
                found.append((node.lineno, name))
                break
    return found


def test_no_private_imports_from_dependencies():
    offenders = []
    for path in sorted(SKNC.rglob("*.py")):
        for line, name in private_imports(path.read_text()):
            module = name if name in PRIVATE_IMPORTS_ALLOWED else name.rsplit(".", 1)[0]
            if module not in PRIVATE_IMPORTS_ALLOWED:
                offenders.append(f"{path.relative_to(SKNC.parent)}:{line}: {name}")
    assert offenders == [], offenders


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from scipy.sparse._sparsetools import csc_matvecs", ["scipy.sparse._sparsetools"]),
        ("import torch._dynamo", ["torch._dynamo"]),
        ("from numpy import _core", ["numpy._core"]),
        ("from scipy.sparse import csc_array", []),
        ("from ._backend import get_ops", []),
        ("from sknc.metrics._core import ldexp", []),
    ],
)
def test_private_import_check_catches_them(source, expected):
    assert [name for _, name in private_imports(source)] == expected
