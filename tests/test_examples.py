"""The examples run as a reader would run them."""
import runpy
from pathlib import Path

EXAMPLES = Path(__file__).parents[1] / "examples"


def test_own_model_and_data_runs_every_lens_into_tables():
    tables = runpy.run_path(str(EXAMPLES / "own_model_and_data.py"))["main"]()
    assert set(tables) == {"language", "knowledge", "grammar", "corpus"}
    for name, table in tables.items():
        assert len(table) > 0, name
    assert set(tables["language"].lang) == {"en", "fr"}
    assert {"text", "activation"} <= set(tables["corpus"].columns)
