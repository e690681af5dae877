import pytest

from lensneurons.cli import STUDIES, main, study

SUBCOMMANDS = list(STUDIES)


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
    out = capsys.readouterr().out
    assert "--out" in out
    # a stray "%" in a help text makes argparse print the option's whole dict
    assert "option_strings" not in out


def test_missing_out_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sparse-probing"])
    assert exit_info.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_missing_dataset_fails_before_the_model_loads(tmp_path, monkeypatch, capsys):
    import lensneurons.core.models

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the data were checked")

    monkeypatch.setattr(lensneurons.core.models, "load_model", no_model)
    monkeypatch.setenv("LENSNEURONS_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(SystemExit) as exit_info:
        main(["language-neurons", "--preset", "flores17", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "flores200" in capsys.readouterr().err


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_help_lists_every_config_field(name, capsys):
    import dataclasses

    with pytest.raises(SystemExit):
        main([name, "--help"])
    out = capsys.readouterr().out
    for f in dataclasses.fields(study(name).config):
        assert f"--{f.name.replace('_', '-')}" in out, f.name
        assert f.metadata.get("help"), f"{name}: field {f.name} has no help text"


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_flags_change_only_the_fields_given(name):
    import argparse
    import dataclasses

    s = study(name)
    parser = argparse.ArgumentParser()
    s.add_arguments(parser)
    base = s.config_from_args(parser.parse_args(["--out", "x"]))
    assert base == s.configure()
    int_field = next(f for f in dataclasses.fields(s.config) if isinstance(getattr(base, f.name), int)
                     and not isinstance(getattr(base, f.name), bool))
    changed = s.config_from_args(parser.parse_args(["--out", "x", f"--{int_field.name.replace('_', '-')}", "7"]))
    assert getattr(changed, int_field.name) == 7
    assert dataclasses.replace(changed, **{int_field.name: getattr(base, int_field.name)}) == base


def test_list_bool_and_alias_flags():
    import argparse

    s = study("corpus-neurons")
    parser = argparse.ArgumentParser()
    s.add_arguments(parser)
    cfg = s.config_from_args(parser.parse_args(["--out", "x", "--layers", "1", "3", "--no-patterns", "--seed", "5",
                                                "--label-fields", "corpus", "genre"]))
    assert (cfg.layers, cfg.patterns, cfg.random_state, cfg.label_fields) == ([1, 3], False, 5, ["corpus", "genre"])
    s = study("language-neurons")
    parser = argparse.ArgumentParser()
    s.add_arguments(parser)
    cfg = s.config_from_args(parser.parse_args(["--out", "x", "--preset", "demo", "--ablation-ks", "--k", "5"]))
    assert (cfg.ablation_ks, cfg.k, cfg.seeds) == ([], 5, 8)  # an empty list skips; the rest is the preset's


def test_unknown_preset_and_bad_choice_are_errors(capsys):
    with pytest.raises(SystemExit):
        main(["knowledge-neurons", "--baseline", "nope", "--out", "x"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sparse-probing", "--preset", "huge", "--out", "x"])
    assert "invalid choice" in capsys.readouterr().err
