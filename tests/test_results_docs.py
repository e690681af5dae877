"""The tables in docs/results/*.md are what their CSV files in docs/results/data/ give."""
import csv
import importlib.util
import re
import shutil
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "results"


def _load_builder():
    """Import docs/results/build_tables.py by path (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("build_tables", DOCS / "build_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bt = _load_builder()


def _copy_doc(stem, dest):
    """Copy one doc and its data folder into dest; return the copied doc's path."""
    shutil.copy(DOCS / f"{stem}.md", dest / f"{stem}.md")
    shutil.copytree(DOCS / "data" / stem, dest / "data" / stem)
    return dest / f"{stem}.md"


def _change_one_number(csv_path):
    """Change one digit in the last numeric cell of the first body row; return the (old, new) cell."""
    rows = bt.read_rows(csv_path)
    cell_index = max(i for i, cell in enumerate(rows[1]) if re.search(r"\d", cell))
    old = rows[1][cell_index]
    digit = re.search(r"\d", old)
    new = old[: digit.start()] + str((int(digit.group()) + 1) % 10) + old[digit.end():]
    rows[1][cell_index] = new
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return old, new


def test_committed_docs_match_their_data():
    docs = bt.doc_paths(DOCS)
    assert {d.stem for d in docs} >= {"language_neurons", "knowledge_neurons", "sparse_probing", "corpus_neurons"}
    for doc in docs:
        blocks = [p for p in bt.split_blocks(doc.read_text(encoding="utf-8")) if isinstance(p, bt.Block)]
        assert blocks, f"{doc.name} has no generated tables"
    problems = bt.check(DOCS)
    assert not problems, "run `make results-docs`; blocks that differ:\n" + "\n".join(map(str, problems))


def test_check_reports_a_changed_number(tmp_path):
    doc = _copy_doc("knowledge_neurons", tmp_path)
    assert bt.check(tmp_path) == []
    data = next(p for p in bt.split_blocks(doc.read_text(encoding="utf-8")) if isinstance(p, bt.Block)).data
    old, new = _change_one_number(tmp_path / data)
    before = doc.read_bytes()

    problems = bt.check(tmp_path)
    assert problems == [bt.Problem(doc.name, data, bt.DIFFERS)]
    assert bt.main(["--check", "--dir", str(tmp_path)]) == 1
    assert doc.read_bytes() == before, "--check must not write"

    # building rewrites just that cell, after which the check passes
    assert bt.main(["--dir", str(tmp_path)]) == 0
    changed = [(a, b) for a, b in zip(before.decode().split("\n"), doc.read_text().split("\n")) if a != b]
    assert len(changed) == 1 and f" {old} " in changed[0][0] and f" {new} " in changed[0][1]
    assert bt.check(tmp_path) == []


def test_check_reports_a_missing_data_file(tmp_path):
    doc = tmp_path / "example.md"
    text = "# Example\n\n<!-- table: data/example/gone.csv -->\n| a |\n|---|\n| 1 |\n<!-- end table -->\n"
    doc.write_text(text, encoding="utf-8")

    assert bt.check(tmp_path) == [bt.Problem("example.md", "data/example/gone.csv", "data file missing")]
    assert bt.main(["--check", "--dir", str(tmp_path)]) == 1
    assert bt.main(["--dir", str(tmp_path)]) == 1
    assert doc.read_text(encoding="utf-8") == text


def test_render_round_trip():
    rows = [["stage", "time | note", "x"], ["**a**", "", "−98%"]]
    assert bt.render_table(rows) == ["| stage | time \\| note | x |", "|---|---|---|", "| **a** | | −98% |"]


def test_write_atomic_keeps_the_file_mode(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("old\n")
    doc.chmod(0o644)
    bt.write_atomic(doc, "new\n")
    assert doc.read_text() == "new\n" and doc.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["doc.md"]
