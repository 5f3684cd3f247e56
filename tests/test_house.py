"""House rules that tooling can check: readable function lengths."""

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
