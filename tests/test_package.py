import subprocess
import sys

import pytest

import lensneurons


def test_top_level_names_are_the_module_objects():
    from lensneurons.lenses.language.analysis import LanguageNeurons
    from lensneurons.core.models import load_model
    from lensneurons.core.stats import average_precision

    assert lensneurons.load_model is load_model
    assert lensneurons.average_precision is average_precision
    assert lensneurons.LanguageNeurons is LanguageNeurons
    for name in lensneurons.__all__:
        assert getattr(lensneurons, name) is not None
    assert set(lensneurons.__all__) <= set(dir(lensneurons))


def test_unknown_top_level_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        lensneurons.no_such_thing


def test_importing_the_package_does_not_import_torch():
    code = "import sys, lensneurons; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("old", ["lensneurons.attribution", "lensneurons.analyses.language_neurons",
                                 "lensneurons.pipelines.finetune_shift", "lensneurons.stats"])
def test_old_module_paths_are_the_moved_modules(old):
    import importlib

    from lensneurons._moved import MOVED

    with pytest.warns(DeprecationWarning, match="has moved"):
        sys.modules.pop(old, None)
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old])


def test_every_old_module_path_resolves():
    import importlib

    from lensneurons._moved import MOVED

    for old, new in MOVED.items():
        if new is not None:
            assert importlib.import_module(old) is importlib.import_module(new)
