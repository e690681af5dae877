"""Datasets: manifests (provenance, license, checksums), resolution of local copies, and loaders.

Local data live outside the repository; point ``$LENSNEURONS_DATA_DIR`` at them (or pass ``data_dir=``).
"""
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

__all__ = [
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
