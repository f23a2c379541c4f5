"""Query and document terms for the cheap, tantivy-free strategies (and the lexical
strategy's sanitizer): one definition so all strategies agree on what a "word" is."""

from __future__ import annotations

import re
import unicodedata

# A term is a run of Unicode letters and digits; everything else (punctuation, quotes, colons,
# parentheses, underscores, symbols, emoji) separates terms. Same rule as tantivy's "simple"
# tokenizer, so a sanitized query never contains query-language syntax.
_TERM = re.compile(r"[^\W_]+")

#: Terms too common to count as evidence of a match in the fresh strategy's overlap boost.
STOPWORDS = frozenset(
    "a an and are at be by for from i in is it me my of on or so the this to with you your".split()
)


def terms(text: str, limit: int = 64) -> list[str]:
    """Lower-cased terms of ``text`` (NFKC first, so full-width letters and composed accents
    match), at most ``limit`` of them: a 10 kB query must not cost 10 kB of work."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    out: list[str] = []
    for match in _TERM.finditer(folded):
        out.append(match.group())
        if len(out) >= limit:
            break
    return out
