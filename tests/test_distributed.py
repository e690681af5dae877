"""`collect` under `torchrun` (2 CPU ranks, gloo) gives every rank the single-process result."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import torch

from lensneurons.core.activations import collect
from lensneurons.core.models import toy_model

WORKER = Path(__file__).with_name("_distributed_worker.py")
N_RANKS = 2


def _worker_module():
    spec = importlib.util.spec_from_file_location("_distributed_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_torchrun(outdir: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    if sys.platform.startswith("linux"):
        # gloo otherwise picks the interface that the hostname resolves to, which a sandbox may lack
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={N_RANKS}",
        str(WORKER), str(outdir),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


def test_torchrun_collect_equals_single_process(tmp_path):
    worker = _worker_module()
    _run_torchrun(tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(N_RANKS)]

    # each rank pooled only its own contiguous share, and together they cover every text once
    n = len(worker.TEXTS)
    assert [got["world_size"] for got in ranks] == [N_RANKS] * N_RANKS
    assert ranks[0]["local_ids"] == list(range(0, n // 2))
    assert ranks[1]["local_ids"] == list(range(n // 2, n))

    model = toy_model(**worker.MODEL_KWARGS)
    want = worker.results(*collect(model, worker.TEXTS, worker.reducers(), progress=False))
    # the ids comparison below is only meaningful without near-ties at the top-k boundary
    top = want["stack_values"].flatten(1).sort(0, descending=True).values[: worker.TOP_K + 1]
    assert (top[:-1] - top[1:]).min() > 1e-5, "TEXTS give a near-tie in TopK; change them"

    for rank, got in enumerate(ranks):
        # Batches differ from the single pass (other texts share a batch, other padding widths), so
        # matmul rounding may differ in the last float32 bits: close, not necessarily bitwise equal.
        assert torch.equal(got["stack_ids"], torch.arange(n)), f"rank {rank}"
        torch.testing.assert_close(got["stack_values"], want["stack_values"], atol=1e-6, rtol=1e-5)
        assert got["welch_counts"] == want["welch_counts"], f"rank {rank}"
        torch.testing.assert_close(got["welch_t"], want["welch_t"], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got["topk_values"], want["topk_values"], atol=1e-6, rtol=1e-5)
        assert torch.equal(got["topk_ids"], want["topk_ids"]), f"rank {rank}"

    # every rank got the same merged result, bit for bit
    for key in ("stack_values", "welch_t", "topk_values", "topk_ids"):
        assert torch.equal(ranks[0][key], ranks[1][key]), key
