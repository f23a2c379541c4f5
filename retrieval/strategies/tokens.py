"""Query and document terms for the cheap, tantivy-free strategies and for the lexical
strategy's query sanitizer: one definition so all strategies agree on what a "word" is."""

from __future__ import annotations

import unicodedata

#: Terms too common to count as evidence of a match in the fresh strategy's overlap boost.
STOPWORDS = frozenset(
    {"a", "an", "and", "are", "at", "be", "by", "for", "from", "i", "in", "is", "it", "me", "my",
     "of", "on", "or", "so", "the", "this", "to", "with", "you", "your"}
)  # fmt: skip

#: Only this much of a text is looked at: a 1 MB query must not cost 1 MB of work.
MAX_CHARS = 4096


def terms(text: str, limit: int = 64) -> list[str]:
    """Lower-cased terms of ``text``, at most ``limit``.

    A term is a run of letters, digits and combining marks (Unicode categories L*, N*, M*, so
    Devanagari or Thai words are not cut at their vowel signs). Everything else (punctuation,
    quotes, colons, parentheses, underscores, symbols, emoji) separates terms, so terms never
    carry query-language syntax. NFKC first: full-width letters and decomposed accents match
    their ordinary forms.
    """
    folded = unicodedata.normalize("NFKC", text[:MAX_CHARS]).casefold()
    out: list[str] = []
    current: list[str] = []
    for ch in folded:
        if unicodedata.category(ch)[0] in "LNM":
            current.append(ch)
        elif current:
            out.append("".join(current))
            current.clear()
            if len(out) >= limit:
                return out
    if current and len(out) < limit:
        out.append("".join(current))
    return out
