"""BM25 full-text retrieval over title, artist, genres and text with tantivy.

Why: exact names ("love story", "queen") are served best by lexical match. Fields are boosted
title 3, artist 2, genres 1.5, text 1. Scoring rule, applied inside tantivy so top-k is exact:

    score = bm25 * (1 + popularity_weight * popularity)

Each document stores ``prior = 2 ** (1 + w * popularity) - 2`` as a fast field and the search
uses ``weight_by_field``, which multiplies BM25 by ``log2(2 + prior) = 1 + w * popularity``.
Among equally relevant entities the more popular one wins; relevance still dominates.

Queries are never parsed as tantivy query language: the text is reduced to plain terms (letters
and digits, lower-cased, at most 32), so quotes, colons, parentheses, AND/OR, backslashes or
emoji can neither raise nor change the meaning. If the parser still refuses the sanitized
text, a hand-built disjunction of boosted term queries is used instead.
"""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tantivy

from ltrr.retrieval.catalog import Catalog, Entity
from ltrr.retrieval.strategies.base import Candidate
from ltrr.retrieval.strategies.tokens import terms

FIELD_BOOSTS: dict[str, float] = {"title": 3.0, "artist": 2.0, "genres": 1.5, "text": 1.0}
_TOKENIZER = "ltrr_en"
_MAX_QUERY_TERMS = 32
_WRITER_HEAP_BYTES = 64_000_000


def _analyzer() -> tantivy.TextAnalyzer:
    """Simple tokenizer, long tokens dropped, lower case, accents folded (Beyonce matches
    Beyoncé), English stemming (stories matches story)."""
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    for name in FIELD_BOOSTS:
        # Positions are kept: a query term the analyzer splits in two becomes a phrase query.
        builder.add_text_field(name, stored=False, tokenizer_name=_TOKENIZER)
    # ``key``: an integer per indexed version of an entity, mapped back to the id in Python
    # (fast-field reads are far cheaper than fetching stored documents).
    builder.add_integer_field("key", stored=False, indexed=True, fast=True)
    builder.add_float_field("prior", stored=False, indexed=False, fast=True)
    return builder.build()


class LexicalStrategy:
    """BM25 with a popularity prior, kept current by catalog change notifications.

    ``index_dir`` puts the index on disk (a fresh index each start, rebuilt from the catalog)
    instead of in RAM. The constructor indexes the catalog in one commit and subscribes, so
    entities applied to the catalog later are retrievable as soon as ``update`` returns.
    """

    name = "lexical"
    #: tantivy searches without the GIL: the serving path runs ``retrieve`` in a thread.
    blocking = True

    def __init__(
        self,
        catalog: Catalog,
        *,
        popularity_weight: float = 0.5,
        index_dir: Path | str | None = None,
    ) -> None:
        if popularity_weight < 0:
            raise ValueError(f"popularity_weight must be >= 0, got {popularity_weight}")
        self.popularity_weight = popularity_weight
        self._schema = _schema()
        if index_dir is None:
            self._index = tantivy.Index(self._schema)
        else:
            Path(index_dir).mkdir(parents=True, exist_ok=True)
            self._index = tantivy.Index(self._schema, path=str(index_dir), reuse=False)
        self._index.register_tokenizer(_TOKENIZER, _analyzer())
        self._analyzer = _analyzer()
        self._writer = self._index.writer(_WRITER_HEAP_BYTES, 1)
        self._lock = threading.Lock()
        self._next_key = 0
        self._key_of: dict[str, int] = {}  # entity id -> key of its indexed version
        self._id_of: dict[int, str] = {}  # key -> entity id
        self._searcher = self._index.searcher()
        self.update(list(catalog), [])
        catalog.subscribe(self.update)

    def __len__(self) -> int:
        return len(self._key_of)

    def update(self, added: list[Entity], removed: list[str]) -> None:
        """Replace ``added`` (delete the old version by key, add the new), then delete
        ``removed``, in one commit; then swap in a searcher that sees the commit. The key map
        gains new keys before the swap and loses retired ones after it, so a concurrent
        ``retrieve`` maps every hit of the searcher it holds (at worst it skips a hit on a
        version that was replaced or deleted meanwhile)."""
        if not added and not removed:
            return
        with self._lock:
            new_keys: dict[str, int] = {}
            stale: list[int] = []
            for entity in added:
                old = new_keys.get(entity.id, self._key_of.get(entity.id))
                if old is not None:
                    self._writer.delete_documents_by_term("key", old)
                    stale.append(old)
                key = self._next_key
                self._next_key += 1
                self._writer.add_document(self._document(entity, key))
                new_keys[entity.id] = key
            for entity_id in removed:
                old = new_keys.pop(entity_id, self._key_of.get(entity_id))
                if old is not None:
                    self._writer.delete_documents_by_term("key", old)
                    stale.append(old)
            self._writer.commit()
            self._index.reload()
            for entity_id, key in new_keys.items():
                self._id_of[key] = entity_id
            self._searcher = self._index.searcher()
            for key in stale:
                self._id_of.pop(key, None)
            for entity_id in removed:
                self._key_of.pop(entity_id, None)
            self._key_of.update(new_keys)

    def retrieve(self, query: str, context: Mapping[str, Any], k: int) -> list[Candidate]:
        """Up to ``k`` entities by BM25 x popularity prior; [] for ``k <= 0`` or a query
        without terms. ``context`` is not used."""
        words = terms(query, _MAX_QUERY_TERMS)
        if k <= 0 or not words:
            return []
        searcher, id_of = self._searcher, self._id_of
        result = searcher.search(self._query(words), k, count=False, weight_by_field="prior")
        if not result.hits:
            return []
        hits = result.hits
        keys = searcher.fast_field_values("key", [address for _, address in hits])
        get, new = id_of.get, tuple.__new__
        return [
            new(Candidate, (entity_id, float(score)))
            for (score, _), key in zip(hits, keys, strict=True)
            if key is not None and (entity_id := get(int(key))) is not None
        ]

    def _query(self, words: list[str]) -> tantivy.Query:
        try:
            return self._index.parse_query(" ".join(words), list(FIELD_BOOSTS), FIELD_BOOSTS)
        except ValueError:
            return self._fallback_query(words)

    def _fallback_query(self, words: list[str]) -> tantivy.Query:
        """Should-clauses of boosted term queries, analyzed like the documents."""
        clauses = []
        for word in words:
            for token in self._analyzer.analyze(word):
                for field, boost in FIELD_BOOSTS.items():
                    term = tantivy.Query.term_query(self._schema, field, token)
                    clauses.append((tantivy.Occur.Should, tantivy.Query.boost_query(term, boost)))
        return tantivy.Query.boolean_query(clauses) if clauses else tantivy.Query.empty_query()

    def _document(self, entity: Entity, key: int) -> tantivy.Document:
        doc = tantivy.Document()
        doc.add_integer("key", key)
        popularity = min(max(entity.popularity, 0.0), 1.0)
        doc.add_float("prior", 2.0 ** (1.0 + self.popularity_weight * popularity) - 2.0)
        doc.add_text("title", _nfkc(entity.title))
        if entity.artist:
            doc.add_text("artist", _nfkc(entity.artist))
        for genre in entity.genres:
            doc.add_text("genres", _nfkc(genre))
        if entity.text:
            doc.add_text("text", _nfkc(entity.text))
        return doc


def _nfkc(text: str) -> str:
    """Documents get the same Unicode normalization as queries (see ``tokens.terms``)."""
    return unicodedata.normalize("NFKC", text)
