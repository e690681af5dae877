"""Regenerate the Markdown tables of docs/results/*.md from the CSV files they name.

A generated table sits between two HTML comments, the path relative to the doc's folder:

    <!-- table: data/language_neurons/steering_paper.csv -->
    | header | cells |
    |---|---|
    | body | cells |
    <!-- end table -->

The CSV file's first row is the table's header row, every further row a body row. Cells are
written as they should appear in the table (bold markers, signs, thousands separators); a `|`
in a cell is escaped as `\\|` in the table, and an empty cell is rendered as `| |`. The
separator row is derived: `|---|` for every header column.

    python docs/results/build_tables.py           # rewrite every block from its data file
    python docs/results/build_tables.py --check   # list blocks that differ; exit 1 if any

Standard library only.
"""

import argparse
import csv
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

DOCS_DIR = Path(__file__).resolve().parent
OPEN_RE = re.compile(r"^<!-- table: (?P<path>\S+) -->$")
CLOSE = "<!-- end table -->"
DIFFERS = "table differs from the data file"


class Block(NamedTuple):
    """One generated table in a doc: the data file it names and the lines between its markers."""

    data: str
    body: list


class Problem(NamedTuple):
    """A block whose text is not what its data file gives (or that cannot be built)."""

    doc: str
    data: str
    reason: str

    def __str__(self):
        return f"{self.doc}: {self.data}: {self.reason}"


def read_rows(csv_path):
    """Return the rows of a CSV file as lists of strings, the header row first."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        return [row for row in csv.reader(f)]


def render_row(cells):
    """Render one table row: `| a | b |`, an empty cell as `| |`, `|` in a cell escaped."""
    parts = [" " + cell.replace("|", "\\|") + " " if cell else " " for cell in cells]
    return "|" + "|".join(parts) + "|"


def render_table(rows):
    """Render a header row, the derived `|---|` separator row and the body rows as lines."""
    if not rows:
        raise ValueError("the data file is empty (it needs at least a header row)")
    header, body = rows[0], rows[1:]
    separator = "|" + "---|" * len(header)
    return [render_row(header), separator] + [render_row(row) for row in body]


def split_blocks(text):
    """Split a doc into plain lines (str) and table blocks (Block), in order.

    Raises ValueError on an opening marker without its end marker.
    """
    lines = text.split("\n")
    parts, i = [], 0
    while i < len(lines):
        opening = OPEN_RE.match(lines[i])
        if not opening:
            parts.append(lines[i])
            i += 1
            continue
        try:
            end = lines.index(CLOSE, i + 1)
        except ValueError:
            raise ValueError(f"line {i + 1}: {lines[i]!r} has no {CLOSE!r}") from None
        parts.append(Block(opening["path"], lines[i + 1:end]))
        i = end + 1
    return parts


def join_blocks(parts):
    """Inverse of split_blocks: the doc text with each block between its markers."""
    lines = []
    for part in parts:
        if isinstance(part, Block):
            lines += [f"<!-- table: {part.data} -->", *part.body, CLOSE]
        else:
            lines.append(part)
    return "\n".join(lines)


def rebuild_doc(doc_path):
    """Return (text with every block rebuilt from its data, problems) for one doc.

    A block that cannot be built (missing or malformed data file) is kept as it is and reported;
    a block that can is reported when its current text differs from the data's.
    """
    doc_path = Path(doc_path)
    try:
        parts = split_blocks(doc_path.read_text(encoding="utf-8"))
    except ValueError as err:
        return None, [Problem(doc_path.name, "-", str(err))]
    problems = []
    for n, part in enumerate(parts):
        if not isinstance(part, Block):
            continue
        data_path = doc_path.parent / part.data
        if not data_path.is_file():
            problems.append(Problem(doc_path.name, part.data, "data file missing"))
            continue
        try:
            body = render_table(read_rows(data_path))
        except (ValueError, csv.Error, UnicodeDecodeError) as err:
            problems.append(Problem(doc_path.name, part.data, f"cannot read data: {err}"))
            continue
        if body != part.body:
            problems.append(Problem(doc_path.name, part.data, DIFFERS))
            parts[n] = Block(part.data, body)
    return join_blocks(parts), problems


def doc_paths(docs_dir):
    """The Markdown docs of a results folder, sorted by name."""
    return sorted(Path(docs_dir).glob("*.md"))


def check(docs_dir=DOCS_DIR):
    """Return the problems of every doc in docs_dir (empty when all tables match their data)."""
    problems = []
    for doc in doc_paths(docs_dir):
        problems += rebuild_doc(doc)[1]
    return problems


def write_atomic(path, text):
    """Write text to path via a temporary file in the same folder and os.replace (keeps the mode)."""
    path = Path(path)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def build(docs_dir=DOCS_DIR):
    """Rewrite every doc whose blocks differ from their data; return the problems left.

    Differing blocks are fixed and not returned; blocks that cannot be built are returned.
    """
    left = []
    for doc in doc_paths(docs_dir):
        text, problems = rebuild_doc(doc)
        if text is not None and text != doc.read_text(encoding="utf-8"):
            write_atomic(doc, text)
            print(f"rewrote {doc.name}")
        left += [p for p in problems if p.reason != DIFFERS]
    return left


def main(argv=None):
    """Command line: build (default) or --check; exit status 1 when problems remain."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only list blocks that differ; write nothing")
    parser.add_argument("--dir", type=Path, default=DOCS_DIR, help="folder of the docs (default: this file's)")
    args = parser.parse_args(argv)
    problems = check(args.dir) if args.check else build(args.dir)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
