"""BLiMP minimal pairs (Warstadt et al. 2020): one grammatical and one ungrammatical sentence per pair.

The local copy is one JSON-lines file per task (paradigm), found with :func:`lensneurons.data.resolve`
and checked against ``data_manifests/blimp.json``:

    pairs = load_blimp(["adjunct_island", "passive_1"])   # {task: [MinimalPair, ...]}
    texts, labels, pair_ids = sentences(pairs["passive_1"])  # good, bad, good, bad, ...
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from lensneurons.data.manifests import PathLike, load_manifest, resolve

__all__ = ["MinimalPair", "blimp_tasks", "load_blimp", "sentences"]

DATASET = "blimp"


@dataclass(frozen=True)
class MinimalPair:
    """One BLiMP pair. ``field`` is e.g. "syntax"; ``phenomenon`` is BLiMP's ``linguistics_term``."""

    task: str
    good: str
    bad: str
    pair_id: int
    field: str = ""
    phenomenon: str = ""


def blimp_tasks() -> list[str]:
    """The task (paradigm) names listed in the BLiMP manifest, sorted."""
    manifest = load_manifest(DATASET)
    return sorted(rel[: -len(".jsonl")] for rel in manifest.files if rel.endswith(".jsonl"))


def _check_tasks(tasks: str | Sequence[str] | None) -> list[str]:
    known = blimp_tasks()
    if tasks is None:
        return known
    if isinstance(tasks, str):
        tasks = [tasks]
    tasks = list(tasks)
    if not tasks:
        raise ValueError("tasks is empty; pass None for all BLiMP tasks")
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise ValueError(f"unknown BLiMP task(s) {unknown}; known tasks ({len(known)}): {', '.join(known)}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks contain duplicates: {tasks}")
    return tasks


def _read_task(path: Path, task: str, limit: int | None) -> list[MinimalPair]:
    pairs = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            try:
                good, bad = row["sentence_good"], row["sentence_bad"]
            except KeyError as exc:
                raise ValueError(f"{path}:{line_no}: missing field {exc.args[0]!r}") from None
            pair_id = int(row.get("pairID", len(pairs)))
            pairs.append(
                MinimalPair(task, good, bad, pair_id, row.get("field", ""), row.get("linguistics_term", ""))
            )
            if limit is not None and len(pairs) == limit:
                break
    return pairs


def load_blimp(
    tasks: str | Sequence[str] | None = None,
    data_dir: PathLike | None = None,
    limit: int | None = None,
    verify: bool = True,
) -> dict[str, list[MinimalPair]]:
    """Minimal pairs per task, in file order (the first ``limit`` pairs of each task if given).

    ``tasks=None`` loads all tasks. Unknown task names raise ValueError listing the known ones. With
    ``verify`` every file of the manifest is checked against its sha256 (once per process).
    """
    names = _check_tasks(tasks)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    root = resolve(DATASET, data_dir=data_dir, verify=verify)
    return {task: _read_task(root / f"{task}.jsonl", task, limit) for task in names}


def minimal_pairs(task: str, pairs: Sequence[tuple[str, str]], phenomenon: str = "") -> list[MinimalPair]:
    """Your own minimal pairs, as (grammatical, ungrammatical) tuples, for the grammar lens:
    ``{"agreement": minimal_pairs("agreement", [("The dog runs.", "The dog run."), ...])}``."""
    out = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(s, str) for s in pair)):
            raise ValueError(f"pair {i} of task {task!r} is not a (grammatical, ungrammatical) pair of strings: {pair!r}")
        out.append(MinimalPair(task, pair[0], pair[1], i, phenomenon=phenomenon))
    if not out:
        raise ValueError(f"task {task!r} has no pairs")
    return out


def sentences(pairs: Sequence[MinimalPair]) -> tuple[list[str], Bool[Tensor, "text"], Int[Tensor, "text"]]:
    """Flatten pairs to texts (good, bad, good, bad, ...), labels (True = grammatical) and pair index.

    The pair index is the position in ``pairs`` (not BLiMP's ``pairID``), so a split by pair index keeps
    both sentences of a pair on the same side.
    """
    if len(pairs) == 0:
        raise ValueError("pairs is empty")
    texts = [s for p in pairs for s in (p.good, p.bad)]
    labels = torch.tensor([True, False] * len(pairs))
    pair_index = torch.arange(len(pairs)).repeat_interleave(2)
    return texts, labels, pair_index
