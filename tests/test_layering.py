"""The layering rule of CONTRIBUTING.md, checked on the imports of every sknc module.

Each part of the package has a level; a module may import its own part and
parts of lower levels only (no imports upwards, none sideways between parts
of the same level), so there can be no import cycles between parts. Every
import counts, including the lazy ones inside functions. The root package
``sknc`` holds only ``__version__`` and may be imported from anywhere.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sknc"

# lowest first; keep in sync with "Layout and layering" in CONTRIBUTING.md
LEVELS = (
    ("utils",),
    ("metrics",),
    ("features", "neighbors"),
    ("model_selection",),
    ("finetune",),
    ("datasets", "plotting", "parallel"),
    ("experiments",),
    ("cli",),
    ("__main__",),
)
LEVEL = {part: i for i, parts in enumerate(LEVELS) for part in parts}


def _module_name(path, package_root):
    """Dotted module name of a file below ``package_root`` (its parent is on sys.path)."""
    parts = list(path.relative_to(package_root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _existing(name, package_root):
    """Whether the dotted ``name`` is a module or package of the package."""
    rel = Path(*name.split(".")[1:]) if "." in name else Path()
    base = package_root / rel
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imported_modules(source, module, is_package, package_root):
    """``(line, dotted name)`` of every module of the package that ``source`` imports.

    ``module`` is the importing module's dotted name; relative imports are
    resolved against it. ``from a import b`` counts as importing ``a.b`` when
    that is a module of the package, else ``a``.
    """
    top = package_root.name
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [
                (node.lineno, a.name)
                for a in node.names
                if a.name == top or a.name.startswith(top + ".")
            ]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level - 1:
                    base = base[: -(node.level - 1)]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
                if base != top and not base.startswith(top + "."):
                    continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if _existing(sub, package_root) else base))
    return found


def _part(name):
    """The part of the package a dotted name belongs to (None for the root)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def violations(package_root, levels):
    """Upward or sideways imports between the parts of the package, as messages."""
    out = []
    for path in sorted(package_root.rglob("*.py")):
        module = _module_name(path, package_root)
        part = _part(module)
        if part is None:  # the root __init__: it must import no part at all
            imports = imported_modules(path.read_text(encoding="utf-8"), module, True, package_root)
            out += [
                f"{path.relative_to(package_root.parent)}:{line} imports {target}; the "
                "root package must stay empty (import sknc is light)"
                for line, target in imports
                if _part(target) is not None
            ]
            continue
        if part not in levels:
            out.append(
                f"{path.relative_to(package_root.parent)}: the part {part!r} has no "
                "level; add it to the layering in CONTRIBUTING.md and this test"
            )
            continue
        source = path.read_text(encoding="utf-8")
        for line, target in imported_modules(
            source, module, path.name == "__init__.py", package_root
        ):
            other = _part(target)
            if other is None or other == part:
                continue
            if other not in levels or levels[other] >= levels[part]:
                where = "sideways" if levels.get(other) == levels[part] else "upwards"
                out.append(
                    f"{path.relative_to(package_root.parent)}:{line} imports {target} "
                    f"({other}, level {levels.get(other)}) from {part} (level "
                    f"{levels[part]}): {where}"
                )
    return out


def test_imports_only_go_downwards():
    problems = violations(PACKAGE, LEVEL)
    assert not problems, "\n".join(problems)


def test_every_part_of_the_package_has_a_level():
    parts = {
        p.stem
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.name != "__init__.py")
        or (p.is_dir() and (p / "__init__.py").is_file())
    }
    assert parts == set(LEVEL)


def test_contributing_lists_the_same_order():
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    order = " < ".join(", ".join(f"`{p}`" for p in parts) for parts in LEVELS[:-1])
    assert order in " ".join(text.split()), order


def _package(tmp_path, files):
    root = tmp_path / "pkg"
    for name, source in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return root


LOW_HIGH = {"low": 0, "mid": 1, "side": 1, "high": 2}


@pytest.mark.parametrize(
    "files, expected",
    [
        # allowed: downwards, within a part, the root, lazily inside a function
        (
            {
                "low/__init__.py": "",
                "low/_a.py": "from ._b import x\n",
                "low/_b.py": "x = 1\n",
                "mid/__init__.py": "from ..low import _a\nfrom pkg import __version__\n",
                "high.py": "def f():\n    import pkg.mid\n    from .low._a import x\n",
            },
            [],
        ),
        # upwards, at the top
        (
            {"low/__init__.py": "from ..mid import thing\n", "mid/__init__.py": "thing = 1\n"},
            ["pkg/low/__init__.py:1 imports pkg.mid (mid, level 1) from low (level 0): upwards"],
        ),
        # upwards, lazily, absolute, through a submodule
        (
            {
                "mid/__init__.py": "",
                "mid/_m.py": "def f():\n    from pkg.high import g\n",
                "high.py": "def g():\n    pass\n",
            },
            ["pkg/mid/_m.py:2 imports pkg.high (high, level 2) from mid (level 1): upwards"],
        ),
        # sideways between parts of one level; "from .. import part" names the part
        (
            {"mid/__init__.py": "from .. import side\n", "side/__init__.py": ""},
            ["pkg/mid/__init__.py:1 imports pkg.side (side, level 1) from mid (level 1): sideways"],
        ),
        # a part without a level, and a root package that imports a part
        (
            {"new.py": "", "low/__init__.py": ""},
            [
                "pkg/new.py: the part 'new' has no level; add it to the layering in CONTRIBUTING.md "
                "and this test"
            ],
        ),
        (
            {"__init__.py": "from . import low\n", "low/__init__.py": ""},
            [
                "pkg/__init__.py:1 imports pkg.low; the root package must stay empty (import sknc is "
                "light)"
            ],
        ),
    ],
)
def test_the_checker_finds_bad_imports(tmp_path, files, expected):
    assert violations(_package(tmp_path, files), LOW_HIGH) == expected
