"""The layout draws the architecture: core and data know nothing of the lenses, a lens knows nothing of another."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "lensneurons"


def _imports(path: Path) -> set[str]:
    """Every lensneurons module a file imports (at any depth: function-level imports count too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("lensneurons")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lensneurons"):
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def _module(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


FILES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", [p for p in FILES if p.parent.name in ("core", "data") or p.parent.parent.name
                                  in ("core",)], ids=_module)
def test_core_and_data_import_no_lens(path):
    upward = {m for m in _imports(path) if m.startswith(("lensneurons.lenses", "lensneurons.cli"))}
    assert not upward, f"{_module(path)} imports {sorted(upward)}"


def test_data_does_not_import_the_core():
    for path in (PACKAGE / "data").rglob("*.py"):
        assert not {m for m in _imports(path) if m.startswith("lensneurons.core")}, _module(path)


@pytest.mark.parametrize("lens", sorted(p.name for p in (PACKAGE / "lenses").iterdir() if p.is_dir()
                                        and not p.name.startswith("_")))
def test_a_lens_imports_only_the_core_data_and_itself(lens):
    for path in (PACKAGE / "lenses" / lens).rglob("*.py"):
        other = {m for m in _imports(path) if m.startswith("lensneurons.lenses")
                 and not m.startswith(f"lensneurons.lenses.{lens}")}
        assert not other, f"{_module(path)} imports another lens: {sorted(other)}"


def test_no_module_imports_an_old_path():
    from lensneurons._moved import MOVED

    for path in FILES:
        old = {m for m in _imports(path) if m in MOVED}
        assert not old, f"{_module(path)} imports moved modules by their old names: {sorted(old)}"
