import pytest

from lensneurons.cli import _PIPELINES, main

SUBCOMMANDS = ["language-neurons"] + [name for name, _, _ in _PIPELINES]


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in SUBCOMMANDS)


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help_parses(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert "--out" in capsys.readouterr().out


def test_missing_out_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sparse-probing"])
    assert exit_info.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_missing_dataset_fails_before_the_model_loads(tmp_path, monkeypatch, capsys):
    import lensneurons.models

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the data were checked")

    monkeypatch.setattr(lensneurons.models, "load_model", no_model)
    monkeypatch.setenv("LENSNEURONS_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(SystemExit) as exit_info:
        main(["language-neurons", "--preset", "flores17", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "flores200" in capsys.readouterr().err
