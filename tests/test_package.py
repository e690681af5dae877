import subprocess
import sys

import pytest

import lensneurons


def test_top_level_names_are_the_module_objects():
    from lensneurons.analyses.language_neurons import LanguageNeurons
    from lensneurons.models import load_model
    from lensneurons.stats import average_precision

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
