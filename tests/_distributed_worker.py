"""One rank of the `torchrun` collection test (tests/test_distributed.py); not a test module itself.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/_distributed_worker.py OUTDIR

Every rank builds the same toy model, runs `collect` with shard=None (so it pools only its own share of
TEXTS and the reducer states are merged across ranks), and saves what it got to OUTDIR/rank{r}.pt.
The test imports TEXTS, LABELS, MODEL_KWARGS and reducers() from here to compute the single-process result.
"""
import sys
from pathlib import Path

import torch

# Short and long texts in several scripts, so that the length-sorted batches of a rank differ from
# those of a single process (different padding widths) and both ranks hold positive and negative texts.
TEXTS = [
    "the cat sat on the mat",
    "a",
    "das ist gut und schön",
    "日本語のテキスト",
    "ok",
    "neurons fire for some languages and not for others",
    "le chat est sur la table",
    "el perro come pan",
    "中文句子很短",
    "one two three four five six seven",
    "xyz " * 6,
    "Zwei Wörter",
    "hello",
    "où est la gare ?",
    "¿dónde está la biblioteca?",
    "a much longer english sentence that keeps going for a while, with commas, and more words",
    "kurz",
    "これはペンです",
    "the end",
    "Mathematik ist schwer, aber schön",
    "bonjour tout le monde",
    "hola",
    "pooled activations per text",
    "ein etwas längerer deutscher Satz mit vielen Wörtern darin",
    "q",
    "les neurones de langue",
    "padding is on the right",
    "東京は大きい都市です",
    "mean, max or last token",
    "fin",
]
# "is this text English?" (roughly): a label set with both classes on both ranks
LABELS = torch.tensor([i % 3 == 0 for i in range(len(TEXTS))])
MODEL_KWARGS = dict(seed=0, n_layers=2, d_model=16, d_mlp=24)
TOP_K = 3


def reducers():
    from lensneurons.core.stats import Stack, TopK, WelchT

    return [Stack(), WelchT(LABELS), TopK(TOP_K)]


def results(stack, welch, topk) -> dict:
    return {
        "stack_values": stack.values,
        "stack_ids": stack.ids,
        "welch_t": welch.t,
        "welch_counts": (welch.pos.count, welch.neg.count),
        "topk_values": topk.values,
        "topk_ids": topk.ids,
    }


def main(outdir: str) -> None:
    from lensneurons.core import distributed
    from lensneurons.core.activations import collect, stream_pooled
    from lensneurons.core.models import toy_model

    distributed.init_from_env()
    rank, world = distributed.rank(), distributed.world_size()
    model = toy_model(**MODEL_KWARGS)
    # which texts this rank pooled itself (shard=None means its own share under torchrun)
    local_ids = sorted(int(i) for ids, _ in stream_pooled(model, TEXTS, progress=False) for i in ids)
    out = results(*collect(model, TEXTS, reducers(), progress=False))
    out.update(rank=rank, world_size=world, local_ids=local_ids)
    torch.save(out, Path(outdir) / f"rank{rank}.pt")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
