"""The API reference builds from the docstrings with warnings as errors, and names every public module."""
import pkgutil
import subprocess
import sys
from pathlib import Path

import lensneurons

ROOT = Path(__file__).resolve().parents[1]


def _public_modules() -> set[str]:
    """Every module on disk whose dotted name has no private part (packages only through their modules)."""
    return {info.name for info in pkgutil.walk_packages(lensneurons.__path__, "lensneurons.")
            if not info.ispkg and not any(p.startswith("_") for p in info.name.split("."))}


def test_every_public_module_has_a_reference_page():
    pages = "\n".join(p.read_text() for p in (ROOT / "docs" / "api" / "reference").glob("*.md"))
    listed = {line.split(":::", 1)[1].strip() for line in pages.splitlines() if line.startswith(":::")}
    # a module is covered by its own page entry or by its package's (core.stats re-exports its modules)
    missing = {m for m in _public_modules() - {"lensneurons.cli"}
               if m not in listed and m.rsplit(".", 1)[0] not in listed}
    assert not missing, f"modules without a reference entry in docs/api/reference: {sorted(missing)}"


def test_reference_builds_strictly(tmp_path):
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    core = (tmp_path / "site" / "reference" / "core" / "index.html").read_text()
    assert "pooled_activations" in core and "NeuronSet" in core
