"""PARAREL and LAMA ConceptNet loaders (small files written here; the real data only under @real_data)."""
import json
import os
from pathlib import Path

import pytest

from lensneurons.data import DatasetNotFoundError
from lensneurons.data.lama import Concept, lama_conceptnet, reference_concepts, select_concepts
from lensneurons.data.pararel import decoder_prompt, pararel, to_prompts


def _write_jsonl(path: Path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


# --------------------------------------------------------------------------- PARAREL


@pytest.fixture
def pararel_dir(tmp_path):
    root = tmp_path / "pararel"
    _write_jsonl(root / "patterns" / "P1.jsonl", [
        {"pattern": "The capital of [X] is [Y] ."},
        {"pattern": "[Y] is the capital of [X]."},
        {"pattern": "[X]'s capital, [Y], is big."},
        {"pattern": "The capital of [X] is [Y]."},  # same decoder prompt as the first
    ])
    _write_jsonl(root / "trex_lms_vocab" / "P1.jsonl", [
        {"sub_label": "Finland", "obj_label": "Helsinki", "uuid": "u1"},
        {"sub_label": "Sweden", "obj_label": "Stockholm", "uuid": "u2"},
    ])
    _write_jsonl(root / "patterns" / "P2.jsonl", [{"pattern": "[X] was born in [Y]."}])
    _write_jsonl(root / "trex_lms_vocab" / "P2.jsonl", [{"sub_label": "Ada", "obj_label": "London", "uuid": "u3"}])
    _write_jsonl(root / "patterns" / "P3.jsonl", [{"pattern": "[X] plays [Y]."}])  # no facts file
    return tmp_path


def test_decoder_prompt_rules():
    assert decoder_prompt("The capital of [X] is [Y] .", "Finland") == "The capital of Finland is"
    assert decoder_prompt("[Y] is the capital of [X].", "Finland") is None
    assert decoder_prompt("[X]'s capital, [Y], is big.", "Finland") == "Finland's capital,"
    assert decoder_prompt("[X]'s capital, [Y], is big.", "Finland", cut=False) is None
    assert decoder_prompt("The capital of [X] is [Y]!", "Finland", cut=False) == "The capital of Finland is"
    assert decoder_prompt("[X] [Y] [Y]", "a") is None


def test_pararel_decoder(pararel_dir):
    facts = pararel(pararel_dir, verify=False)
    assert [f.key for f in facts] == ["P1:Finland -> Helsinki", "P1:Sweden -> Stockholm"]  # P2: one prompt only
    f = facts[0]
    assert f.prompts == ("The capital of Finland is", "Finland's capital,")
    assert f.answer == " Helsinki" and f.uuid == "u1"
    assert to_prompts(facts)["P1:Finland -> Helsinki"] == [
        ("The capital of Finland is", " Helsinki"), ("Finland's capital,", " Helsinki")
    ]
    assert [f.prompts for f in pararel(pararel_dir, cut=False, min_prompts=1, verify=False)] == [
        ("The capital of Finland is",), ("The capital of Sweden is",), ("Ada was born in",)
    ]
    assert [f.key for f in pararel(pararel_dir, relations=["P2"], min_prompts=1, verify=False)] == [
        "P2:Ada -> London"
    ]


def test_pararel_masked(pararel_dir):
    f = pararel(pararel_dir, style="masked", verify=False)[0]
    assert f.prompts == (
        "The capital of Finland is [MASK] .", "[MASK] is the capital of Finland.",
        "Finland's capital, [MASK], is big.", "The capital of Finland is [MASK].",
    )
    assert f.answer == "Helsinki"


def test_pararel_bad_input(pararel_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown PARAREL relation"):
        pararel(pararel_dir, relations=["P3"], verify=False)
    with pytest.raises(ValueError, match="unknown style"):
        pararel(pararel_dir, style="seq2seq", verify=False)
    with pytest.raises(ValueError, match="min_prompts"):
        pararel(pararel_dir, min_prompts=0, verify=False)
    with pytest.raises(DatasetNotFoundError, match="pararel"):
        pararel(tmp_path / "nowhere")


# --------------------------------------------------------------------------- LAMA ConceptNet


def _rec(sub, obj, *sentences):
    return {"sub": sub, "obj": obj, "pred": "IsA", "masked_sentences": list(sentences), "obj_label": obj, "uuid": "x"}


LAMA_RECORDS = [
    _rec("cat", "x", "a cat sentence with far too many words in it for the rule [MASK]"),  # 14 words
    *[_rec("bird", o, f"A bird can [MASK] {i}.") for i, o in enumerate(["fly", "sing", "nest", "eat"])],
    _rec("cat", "mice", "A cat likes to eat [MASK].", "[MASK] [MASK] ignore", "Cats chase [MASK]."),
    _rec("cat", "pets", "A cat is one of the [MASK]."),
    _rec("cat", "pets", "A cat is one of the [MASK]."),  # duplicate template
    _rec("cat", "catnip", "You give [MASK] to a cat."),  # the first match falls inside the object
    _rec("cat", "fur", "The cat has [MASK] ﬁne."),  # NFKD turns the ligature into "fi"
    _rec("cat", "dogs", "[MASK] [MASK]"),  # no single-mask sentence
    _rec("cat", "dogs", "Dogs chase [MASK]."),  # subject absent
    *[_rec("(", o, f"( is [MASK] {i}") for i, o in enumerate("abcd")],  # invalid regular expression
    *[_rec("dog", o, f"A dog is [MASK].") for o in ("big", "loud", "good")],  # 3 templates only
    *[_rec("sex", o, f"sex is [MASK] {i}.") for i, o in enumerate("abcd")],  # excluded by default
]


def test_select_concepts_rule():
    concepts = select_concepts(LAMA_RECORDS)
    assert [c.name for c in concepts] == ["bird", "cat"]  # order of the first kept template
    assert concepts[1].templates == (
        "[MASK]s chase mice.",
        "A [MASK] is one of the pets.",
        "You give [MASK]nip to a cat.",
        "The [MASK] has fur fine.",
    )
    assert concepts[0].templates[0] == "A [MASK] can fly 0."
    assert [c.name for c in select_concepts(LAMA_RECORDS, exclude=())] == ["bird", "cat", "sex"]
    assert [c.name for c in select_concepts(LAMA_RECORDS, min_templates=3)] == ["bird", "cat", "dog"]
    assert [c.name for c in select_concepts(LAMA_RECORDS, max_words=5)] == ["bird"]  # cat keeps 2 of 4
    with pytest.raises(ValueError, match="min_templates"):
        select_concepts(LAMA_RECORDS, min_templates=0)


def test_concept_prompt_pairs():
    c = Concept("cat", ("[MASK]s chase mice.", "A [MASK] is one of the pets.", "You give [MASK]nip to a cat.",
                        "The [MASK] has fur.", "The [MASK] is big."))
    assert c.decoder_pairs() == [("A", " cat"), ("You give", " cat"), ("The", " cat")]
    assert c.masked_pairs()[0] == ("[MASK]s chase mice.", "cat")


def test_lama_from_file_and_missing(tmp_path):
    path = tmp_path / "lama_conceptnet" / "ConceptNet" / "test.jsonl"
    _write_jsonl(path, LAMA_RECORDS)
    assert [c.name for c in lama_conceptnet(path)] == ["bird", "cat"]
    assert [c.name for c in lama_conceptnet(data_dir=tmp_path)] == ["bird", "cat"]
    path.unlink()
    with pytest.raises(DatasetNotFoundError, match="LAMA file is not available"):
        lama_conceptnet(data_dir=tmp_path)


def test_reference_list_parsing(tmp_path):
    glued = tmp_path / "glued.csv"
    glued.write_text("<LEGEND>: <concept>,<layer num>,...,<median of layer nums>analyse,10,11,10.5\nbathe,11,11.0\n")
    assert reference_concepts(path=glued) == ["analyse", "bathe"]
    split = tmp_path / "split.csv"
    split.write_text("<LEGEND>: <concept>,<layer num>,...,<median of layer nums>\nanalyse,10,11,10.5\nbathe,")
    assert reference_concepts(path=split) == ["analyse", "bathe"]


# --------------------------------------------------------------------------- real data


@pytest.mark.real_data
def test_real_pararel():
    facts = pararel()
    assert len({f.relation for f in facts}) >= 30
    for f in facts[:: max(1, len(facts) // 500)]:
        assert len(f.prompts) >= 2 and all(f.subject in p and "[" not in p for p in f.prompts)
    p36 = [f for f in facts if f.relation == "P36"]
    assert "The capital of Cook County is" in p36[0].prompts


@pytest.mark.real_data
def test_real_reference_list_and_lama_when_present():
    names = reference_concepts()
    assert len(names) == 702 and len(set(names)) == 702
    lama = Path(os.environ["LENSNEURONS_DATA_DIR"]) / "lama_conceptnet" / "ConceptNet" / "test.jsonl"
    if not lama.is_file():
        pytest.skip("LAMA ConceptNet file not present (only the reference list is)")
    selected = {c.name for c in lama_conceptnet()}
    assert selected == set(names), (sorted(selected - set(names))[:20], sorted(set(names) - selected)[:20])
