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
