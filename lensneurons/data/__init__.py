"""Datasets: manifests (provenance, license, checksums), resolution of local copies, and loaders.

Local data live outside the repository; point ``$LENSNEURONS_DATA_DIR`` at them (or pass ``data_dir=``).
"""
from lensneurons.data.blimp import MinimalPair, blimp_tasks, load_blimp, minimal_pairs
from lensneurons.data.corpora import Corpus, from_dataset, from_file, from_frame, load_nltk_corpus, nltk_corpora
from lensneurons.data.lama import Concept, lama_conceptnet
from lensneurons.data.manifests import (
    DATA_DIR_ENV,
    MANIFEST_DIR_ENV,
    DatasetChecksumError,
    DatasetNotFoundError,
    FileEntry,
    Manifest,
    find_data_dir,
    list_datasets,
    load_from_hub,
    load_manifest,
    manifest_dir,
    resolve,
    sha256_file,
)
from lensneurons.data.multilingual import (
    FLORES_PLUS_CODES,
    KOJIMA_LANGUAGES,
    LanguageTexts,
    flores200,
    flores_plus_from_hub,
    kojima2024,
    parallel_sentences,
    pawsx_from_hub,
)
from lensneurons.data.pararel import Fact, pararel

__all__ = [
    "Concept",
    "Corpus",
    "Fact",
    "MinimalPair",
    "blimp_tasks",
    "from_dataset",
    "from_file",
    "lama_conceptnet",
    "load_blimp",
    "load_nltk_corpus",
    "nltk_corpora",
    "pararel",
    "DATA_DIR_ENV",
    "FLORES_PLUS_CODES",
    "KOJIMA_LANGUAGES",
    "MANIFEST_DIR_ENV",
    "DatasetChecksumError",
    "DatasetNotFoundError",
    "FileEntry",
    "LanguageTexts",
    "Manifest",
    "find_data_dir",
    "flores200",
    "flores_plus_from_hub",
    "kojima2024",
    "list_datasets",
    "load_from_hub",
    "load_manifest",
    "manifest_dir",
    "parallel_sentences",
    "pawsx_from_hub",
    "resolve",
    "sha256_file",
]
