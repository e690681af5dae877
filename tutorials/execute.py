"""Run the tutorials at their small size and save them with their outputs (`make tutorials`).

    python tutorials/execute.py [NOTEBOOK ...]      # default: every tutorial
    python tutorials/execute.py --clean-only NB ...  # only tidy outputs already there

Outputs a reader does not need on the web are dropped: stderr (progress bars, environment warnings that
name this machine's paths) and circuitsvis' interactive views, whose ~1 MB script renders only in a live
notebook (a line says to run the cell). Each notebook is written to a temporary file and renamed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat

HERE = Path(__file__).parent
INTERACTIVE = "circuits-vis-"


def tidy(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        kept = []
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and out.name == "stderr":
                continue
            html = "".join(out.get("data", {}).get("text/html", ""))
            if INTERACTIVE in html:
                out = nbformat.v4.new_output("display_data", data={
                    "text/plain": "[interactive circuitsvis view: run this cell in Jupyter to see it]"})
            kept.append(out)
        cell.outputs = kept
    return nb


def execute(nb: nbformat.NotebookNode, path: Path) -> None:
    from nbclient import NotebookClient

    os.environ["LENSNEURONS_TUTORIAL_SMALL"] = "1"
    NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, default=sorted(HERE.glob("*.ipynb")))
    parser.add_argument("--clean-only", action="store_true", help="tidy the saved outputs without running")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        started = time.time()
        nb = nbformat.read(path, as_version=4)
        if not args.clean_only:
            execute(nb, path)
        tmp = path.with_name(f".{path.name}.tmp")
        nbformat.write(tidy(nb), tmp)
        os.replace(tmp, path)
        print(f"{path.name}: {time.time() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
