"""Q2E memory: what people engaged with after a (normalized) query, decayed by event time.

Observed rows (``q2e/<query>\\0<entity>``) hold exponentially decayed impression and per-action
counts; a per-query row count (``q2n/<query>``) bounds the memory per query. Cold start comes
from a token index over catalog metadata (``q2p/<token>\\0<entity>``, plus ``q2d/<entity>`` so
re-indexing removes stale postings): those *predicted* scores are scaled well below one click,
and an observed row for the same entity replaces the predicted one. No wall clock is read:
every time is an event timestamp in milliseconds, passed in.
"""

from __future__ import annotations

import math
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import msgspec
import orjson

from ltrr.ordering import best_first
from ltrr.state.store import Store

DEFAULT_ACTION_WEIGHTS: Mapping[str, float] = {
    "click": 1.0, "play": 2.0, "like": 3.0, "add_to_favorites": 3.0,
    "add_to_playlist": 3.0, "purchase": 5.0, "share": 2.0, "skip": -1.0,
}  # fmt: skip
ENTITY_TYPES = frozenset({"track", "artist", "album", "playlist", "podcast", "station", "document"})
FIELD_WEIGHTS: Mapping[str, float] = {"title": 1.0, "artist": 0.8, "genre": 0.5}
_APOSTROPHES = frozenset("'\u2018\u2019\u02bc")
_JOINERS = frozenset("\u200c\u200d")  # ZWNJ/ZWJ carry meaning (Persian, emoji sequences)
_OBSERVED, _COUNT, _POSTING, _DOC = b"q2e/", b"q2n/", b"q2p/", b"q2d/"
#: Postings ordered best first: ``q2s/<token>\x00<rank: 8 hex digits><entity>``, rank =
#: (1 - weight * (0.5 + 0.5 * popularity)) * 2**32, so a prefix scan reads a token's
#: best-predicted entities first and can stop there. ``q2p/`` postings (unordered) are what
#: workers before this layout wrote; re-indexing an entity deletes them.
_SORTED = b"q2s/"
_RANK_SPAN = 2**32 - 1
#: Postings read per query token: predictions are a cold-start prior, and a common token
#: (a genre word) can have tens of thousands of entities; reading them all cost 200 ms a
#: search at 100,000 entities. At least the ``k`` asked for.
PREDICTED_PER_TOKEN = 256
#: Tokens whose best postings a memory keeps parsed between searches (LRU), about 10 kB each.
POSTING_CACHE_TOKENS = 2048


def normalize_query(text: str) -> str:
    """The canonical form under which query variants share one memory.

    Rules, in order: (1) NFKC (full-width letters U+FF21.. -> ASCII, ``e`` + combining acute
    -> ``é``), then casefold, then NFKC again (casefolding can un-compose, as Unicode's
    NFKC_Casefold notes); (2) apostrophes (U+0027, U+2018, U+2019, U+02BC) are deleted,
    joining the word (``don't`` -> ``dont``, ``Guns N' Roses`` -> ``guns n roses``); (3) every
    other punctuation character (Unicode category P*, including hyphens and slashes) is a space
    (``AC/DC`` -> ``ac dc``, ``Jay-Z`` -> ``jay z``); (4) control characters other than
    whitespace, and format characters other than ZWNJ/ZWJ (zero-width space, soft hyphen, BOM)
    are deleted; (5) runs of whitespace (tabs, newlines, Unicode spaces) collapse to one space
    and the ends are stripped. Symbols (``$ + & 🔥``) and accents are kept: ``Beyoncé`` and
    ``Beyonce`` stay distinct. The function is idempotent.
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    out: list[str] = []
    for ch in folded:
        category = unicodedata.category(ch)
        if ch in _APOSTROPHES or (category == "Cf" and ch not in _JOINERS):
            continue
        if category[0] == "P":
            out.append(" ")
        elif category != "Cc" or ch.isspace():
            out.append(ch)
    return " ".join("".join(out).split())


@dataclass(frozen=True)
class Q2EConfig:
    """Decay, action weights and bounds of the memory.

    ``half_life_ms``: every decayed count halves per half-life of event time (default 7 days).
    ``action_weights``: weight of each action type in the combined score; types not listed
    are stored but weigh 0. ``max_entities``: observed rows kept per query; beyond it the
    lowest combined scores are evicted. ``predicted_scale``: the ceiling of a predicted score;
    one click alone scores 1/sqrt(2) ~ 0.71, so 0.1 keeps predictions well below observations.
    """

    half_life_ms: int = 7 * 24 * 3600 * 1000
    action_weights: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_ACTION_WEIGHTS)
    )
    max_entities: int = 200
    predicted_scale: float = 0.1

    def __post_init__(self) -> None:
        if self.half_life_ms <= 0:
            raise ValueError(f"half_life_ms must be > 0, got {self.half_life_ms}")
        if self.max_entities < 1:
            raise ValueError(f"max_entities must be >= 1, got {self.max_entities}")
        if self.predicted_scale <= 0:
            raise ValueError(f"predicted_scale must be > 0, got {self.predicted_scale}")


class _Action(msgspec.Struct):
    entity_id: str
    type: str
    timestamp_ms: int | float


class _Provenance(msgspec.Struct):
    query: str
    shown: list[str]
    actions: list[_Action]
    late: bool


class Feedback(msgspec.Struct):
    """What the memory folds in from one reward line: its ``EventId`` (the impression),
    ``Timestamp`` and the ``ltrr`` fields (query, shown entities, actions, late), decoded
    without building the features."""

    EventId: str
    Timestamp: str
    ltrr: _Provenance

    def actions(self) -> list[tuple[str, str, int]]:
        return [(a.entity_id, a.type, int(a.timestamp_ms)) for a in self.ltrr.actions]


#: Feedback of a reward line; raises ``msgspec.DecodeError`` (not JSON) or
#: ``msgspec.ValidationError`` (a field missing or of the wrong type).
decode_feedback = msgspec.json.Decoder(Feedback).decode


class Q2EScore(NamedTuple):
    entity_id: str
    score: float
    source: str  # "observed" or "predicted"


@dataclass(frozen=True)
class Engagement:
    """One observed (query, entity) row decayed to a time: impressions and counts per action."""

    impressions: float
    actions: Mapping[str, float]


def check_row(key: bytes | None, value: bytes | None) -> str | None:
    """Why a replicated Q2E changelog record cannot be applied, or None if it can.

    Retrieval workers apply the learning worker's rows as they are; a record anyone else wrote
    to the topic (no key, an unknown prefix, a value that does not decode to the row's shape)
    must not reach the store that ``/search`` reads.
    """
    if not isinstance(key, bytes) or not key:
        return "no key"
    try:
        key.decode("utf-8")
    except UnicodeDecodeError:
        return "key is not UTF-8"
    prefix = key[:4]
    if prefix not in (_OBSERVED, _COUNT, _POSTING, _SORTED, _DOC) or len(key) == 4:
        return f"unknown key {key[:40]!r}"
    if prefix in (_OBSERVED, _POSTING, _SORTED) and b"\x00" not in key[4:]:
        return f"key {key[:40]!r} names no entity"
    if prefix == _SORTED and _sorted_rank(key) is None:
        return f"key {key[:40]!r} has no rank and entity"
    if value is None:  # a deletion
        return None
    try:
        if prefix == _COUNT:
            return None if int(value) >= 0 else "negative count"
        row = orjson.loads(value)
    except (ValueError, orjson.JSONDecodeError):
        return "value does not decode"
    if prefix == _OBSERVED:
        ok = (
            isinstance(row, dict)
            and _is_number(row.get("t"))
            and _is_number(row.get("i"))
            and isinstance(row.get("a"), dict)
            and all(isinstance(k, str) and _is_number(v) for k, v in row["a"].items())
        )
    elif prefix in (_POSTING, _SORTED):
        ok = isinstance(row, list) and len(row) == 2 and all(map(_is_number, row))
    else:
        ok = (
            isinstance(row, dict)
            and isinstance(row.get("type"), str)
            and isinstance(row.get("tokens"), list)
            and all(isinstance(t, str) for t in row["tokens"])
            and isinstance(row.get("ranks", {}), dict)
            and all(isinstance(r, str) for r in row.get("ranks", {}).values())
        )
    return None if ok else "value is not a Q2E row"


def _sorted_rank(key: bytes) -> tuple[int, bytes] | None:
    """The rank and entity of a ``q2s/`` posting key, or None if it has neither."""
    tail = key[key.index(b"\x00") + 1 :] if b"\x00" in key else b""
    rank, entity = tail[:8], tail[8:]
    if len(rank) < 8 or not entity or any(c not in b"0123456789abcdef" for c in rank):
        return None
    return int(rank, 16), entity


def _rank(weight: float, popularity: float) -> bytes:
    """The 8 hex digits that order a posting best first (see ``_SORTED``)."""
    score = min(1.0, max(0.0, weight * (0.5 + 0.5 * popularity)))
    return b"%08x" % round((1.0 - score) * _RANK_SPAN)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _entity_key(entity_id: str) -> bytes:
    if not entity_id or "\x00" in entity_id:
        raise ValueError(f"entity id must be non-empty without NUL, got {entity_id!r}")
    return entity_id.encode()


def _tokens(text: str) -> list[str]:
    return normalize_query(text).split()


class Q2EMemory:
    """Observed and predicted query-to-entity scores over any ``Store``.

    Decay: a count is a sum of ``2 ** (-(T - t_event) / half_life)`` over its events. A row keeps
    its counts decayed to ``T`` = its latest event; an event older than ``T`` (late, out of
    order) is added already decayed, so the result does not depend on arrival order. Impressions
    decay too, so old exposure stops penalizing an entity at the same pace its old engagement
    stops helping. Combined score at ``now``:
    ``sum(weight[a] * count[a]) / sqrt(1 + impressions)`` (a smoothed CTR: engagement grows it,
    exposure without engagement shrinks it; skips make it negative). Reading at a ``now`` before
    the row's latest event applies no decay (never inflates).
    """

    def __init__(self, store: Store, config: Q2EConfig | None = None) -> None:
        self.store = store
        self.config = config or Q2EConfig()
        #: token -> (postings written when read, how many, the best postings): see _postings.
        self._posting_cache: OrderedDict[str, tuple[int, int, list[tuple[str, float]]]] = (
            OrderedDict()
        )
        watch = getattr(store, "watch", None)
        if watch is not None:
            watch(_SORTED)

    # ---- observed ---------------------------------------------------------------------------

    def _decay(self, row: Mapping[str, Any], now_ms: int) -> float:
        return float(2.0 ** (-max(0, now_ms - int(row["t"])) / self.config.half_life_ms))

    def _combined(self, row: Mapping[str, Any], now_ms: int) -> float:
        weights = self.config.action_weights
        engagement = sum(weights.get(a, 0.0) * c for a, c in row["a"].items())
        f = self._decay(row, now_ms)
        return f * engagement / math.sqrt(1.0 + f * row["i"])

    def _add(self, row: dict[str, Any], slot: str | None, t_ms: int) -> None:
        """Add one event at ``t_ms`` to ``row`` (``slot`` None = impression, else action)."""
        if t_ms >= row["t"]:
            f = self._decay(row, t_ms)
            row["i"] *= f
            row["a"] = {a: c * f for a, c in row["a"].items()}
            row["t"], inc = t_ms, 1.0
        else:
            inc = 2.0 ** (-(row["t"] - t_ms) / self.config.half_life_ms)
        if slot is None:
            row["i"] += inc
        else:
            row["a"][slot] = row["a"].get(slot, 0.0) + inc

    def record(
        self,
        query: str,
        shown: Sequence[str],
        actions: Sequence[tuple[str, str, int]],
        timestamp_ms: int,
    ) -> None:
        """Remember one reward's worth of feedback in ONE atomic ``store.write``.

        Each distinct ``shown`` entity gets one impression at ``timestamp_ms``; each
        ``(entity_id, action_type, timestamp_ms)`` adds one decayed action (acted entities
        need not be in ``shown``). If the query now holds more than ``max_entities`` rows, the
        lowest combined scores at ``timestamp_ms`` are evicted (ties: oldest, then by id).
        A query that normalizes to "" or an empty feedback writes nothing.
        """
        q = normalize_query(query).encode()
        if not q or (not shown and not actions):
            return
        prefix = _OBSERVED + q + b"\x00"
        rows: dict[bytes, dict[str, Any]] = {}
        added = 0

        def row_for(entity_id: str) -> dict[str, Any]:
            nonlocal added
            key = prefix + _entity_key(entity_id)
            if key not in rows:
                raw = self.store.get(key)
                added += raw is None
                rows[key] = orjson.loads(raw) if raw else {"t": timestamp_ms, "i": 0.0, "a": {}}
            return rows[key]

        for entity_id in dict.fromkeys(shown):
            self._add(row_for(entity_id), None, timestamp_ms)
        for entity_id, action_type, t_ms in actions:
            self._add(row_for(entity_id), action_type, t_ms)
        batch: dict[bytes, bytes | None] = {k: orjson.dumps(r) for k, r in rows.items()}
        raw_count = self.store.get(_COUNT + q)
        count = (int(raw_count) if raw_count else 0) + added
        if count > self.config.max_entities:
            every = {k: orjson.loads(v) for k, v in self.store.scan(prefix)} | rows
            ranked = sorted(
                every, key=lambda k: (self._combined(every[k], timestamp_ms), every[k]["t"], k)
            )
            batch.update(dict.fromkeys(ranked[: len(every) - self.config.max_entities]))
            count = min(len(every), self.config.max_entities)
        batch[_COUNT + q] = str(count).encode()
        self.store.write(batch)

    def observed(self, query: str, entity_id: str, now_ms: int) -> Engagement | None:
        """The decayed counts of one (query, entity) row at ``now_ms``, or None if absent."""
        key = _OBSERVED + normalize_query(query).encode() + b"\x00" + _entity_key(entity_id)
        raw = self.store.get(key)
        if raw is None:
            return None
        row = orjson.loads(raw)
        f = self._decay(row, now_ms)
        return Engagement(row["i"] * f, {a: c * f for a, c in row["a"].items()})

    def remembered(self, query: str, now_ms: int) -> dict[str, float]:
        """Every observed row of ``query`` by entity, at its combined score at ``now_ms`` (> 0:
        engaged with; <= 0: shown and ignored or skipped). Predictions are left out."""
        q = normalize_query(query)
        if not q:
            return {}
        prefix = _OBSERVED + q.encode() + b"\x00"
        return {
            key[len(prefix) :].decode(): self._combined(orjson.loads(value), now_ms)
            for key, value in self.store.scan(prefix)
        }

    # ---- predicted (cold start) -------------------------------------------------------------

    def index_entities(self, entities: Iterable[Mapping[str, Any]], batch_size: int = 1000) -> int:
        """Index catalog entities for predicted scores, ``batch_size`` per atomic write.

        Each entity: ``id``, ``type`` (one of ``ENTITY_TYPES``), ``title``, optional ``artist``,
        ``genres`` (list), ``popularity`` in [0, 1]. Each normalized token gets one posting with
        the highest weight of the fields it occurs in (title 1.0, artist 0.8, genre 0.5) and
        the popularity; re-indexing an entity first deletes its old postings. Returns the count.
        """
        batch: dict[bytes, bytes | None] = {}
        n = 0
        for entity in entities:
            self._index_into(batch, entity)
            n += 1
            if n % batch_size == 0:
                self.store.write(batch)
                batch = {}
        if batch:
            self.store.write(batch)
        return n

    def index_entity(self, entity: Mapping[str, Any]) -> None:
        """Index one catalog entity (see ``index_entities``) in one atomic write."""
        self.index_entities([entity])

    def migrate_postings(self, limit: int = 5000) -> int:
        """Move up to ``limit`` unordered postings (``q2p/``, written by workers before the
        ordered layout) to ``q2s/``, in one write, with their entities' records; returns how
        many moved (0: nothing left). Without it, entities the catalog topic does not deliver
        again would keep no cold-start prediction after an upgrade."""
        batch: dict[bytes, bytes | None] = {}
        docs: dict[bytes, dict[str, Any]] = {}
        n = 0
        for key, value in self.store.scan(_POSTING, limit=limit):
            n += 1
            batch[key] = None
            token, sep, eid = key[len(_POSTING) :].partition(b"\x00")
            try:
                weight, popularity = orjson.loads(value)
                rank = _rank(float(weight), float(popularity))
            except (ValueError, TypeError):
                continue  # a posting that never decoded: dropped
            if not sep or not eid:
                continue
            batch[_SORTED + token + b"\x00" + rank + eid] = value
            if eid not in docs:
                raw = self.store.get(_DOC + eid)
                docs[eid] = orjson.loads(raw) if raw else {"type": "track", "tokens": []}
            doc = docs[eid]
            name = token.decode("utf-8", "replace")
            doc["tokens"] = [t for t in doc.get("tokens", []) if t != name]
            doc.setdefault("ranks", {})[name] = rank.decode()
        for eid, doc in docs.items():
            batch[_DOC + eid] = orjson.dumps(doc)
        if batch:
            self.store.write(batch)
        return n

    def _index_into(self, batch: dict[bytes, bytes | None], entity: Mapping[str, Any]) -> None:
        eid = _entity_key(str(entity.get("id", "")))
        if entity.get("type") not in ENTITY_TYPES:
            raise ValueError(f"entity {eid!r}: type must be one of {sorted(ENTITY_TYPES)}")
        popularity = float(entity.get("popularity", 0.0))
        if not 0.0 <= popularity <= 1.0:
            raise ValueError(f"entity {eid!r}: popularity must be in [0, 1], got {popularity}")
        weights: dict[str, float] = {}
        fields = [("title", entity.get("title", "")), ("artist", entity.get("artist") or "")]
        fields += [("genre", g) for g in entity.get("genres") or []]
        for name, text in fields:
            for token in _tokens(str(text)):
                weights[token] = max(weights.get(token, 0.0), FIELD_WEIGHTS[name])
        old = batch.get(_DOC + eid, self.store.get(_DOC + eid))
        doc = orjson.loads(old) if old else {}
        for token in doc.get("tokens", []):
            batch[_POSTING + token.encode() + b"\x00" + eid] = None  # an older worker's
        for token, rank in (doc.get("ranks") or {}).items():
            batch[_SORTED + token.encode() + b"\x00" + rank.encode() + eid] = None
        ranks = {token: _rank(weight, popularity) for token, weight in weights.items()}
        for token, weight in weights.items():
            key = _SORTED + token.encode() + b"\x00" + ranks[token] + eid
            batch[key] = orjson.dumps([weight, popularity])
        # "tokens" names unordered postings to delete (older workers'); none are written now.
        batch[_DOC + eid] = orjson.dumps(
            {
                "type": entity["type"],
                "tokens": [],
                "ranks": {t: r.decode() for t, r in sorted(ranks.items())},
            }
        )

    def predicted(self, query: str, per_token: int = PREDICTED_PER_TOKEN) -> dict[str, float]:
        """Predicted scores of the entities sharing a token with ``query``: for each distinct
        query token, the ``per_token`` entities it predicts best.

        ``predicted_scale * mean over distinct query tokens of weight * (0.5 + 0.5 *
        popularity)``, the token's field weight in the entity (0 if absent) times its
        popularity prior, read from the posting's rank (to 2**-32). An entity beyond every
        token's first ``per_token`` is left out: it would score at most that token's
        ``per_token``-th value, and predictions only order entities nobody engaged with yet.
        """
        tokens = sorted(set(_tokens(query)))
        if not tokens:
            return {}
        # An entity counts once per token (its best posting, should a re-index race leave two).
        first, *rest = (dict(reversed(self._postings(t, per_token))) for t in tokens)
        sums = first
        if rest:
            get = sums.get
            for postings in rest:
                for eid, value in postings.items():
                    sums[eid] = get(eid, 0.0) + value
        scale = self.config.predicted_scale / len(tokens)
        return {e: scale * s for e, s in sums.items()}

    def _postings(self, token: str, limit: int) -> list[tuple[str, float]]:
        """A token's ``limit`` best postings as (entity, weight * popularity prior), kept
        between calls while no posting changes, when the store can tell (a ``MemoryStore``,
        as a retrieval worker's replica: catalog updates are rare, searches are not)."""
        written = self._postings_written()
        if written is not None:
            cached = self._posting_cache.get(token)
            if cached is not None and cached[0] == written and cached[1] >= limit:
                return cached[2][:limit]
        prefix = _SORTED + token.encode() + b"\x00"
        at, end = len(prefix), len(prefix) + 8
        out: list[tuple[str, float]] = []
        for key, _ in self.store.scan(prefix, limit=limit):
            try:  # replicated rows passed check_row; a bad key is skipped, never fatal
                out.append((key[end:].decode(), 1.0 - int(key[at:end], 16) / _RANK_SPAN))
            except ValueError:
                continue
        if written is not None:
            cache = self._posting_cache
            cache[token] = (written, limit, out)
            cache.move_to_end(token)
            while len(cache) > POSTING_CACHE_TOKENS:
                cache.popitem(last=False)
        return out

    def _postings_written(self) -> int | None:
        written = getattr(self.store, "written", None)
        return None if written is None else cast(int | None, written(_SORTED))

    # ---- reading ----------------------------------------------------------------------------

    def scores(self, query: str, now_ms: int, k: int = 50) -> list[Q2EScore]:
        """Top ``k`` entities for ``query`` at ``now_ms``, best first (ties by entity id).

        Observed rows score by the combined rule; entities without a row score by
        ``predicted``. An observed row replaces the prediction even when it scores lower: an
        entity shown and ignored is evidence against it.
        """
        q = normalize_query(query)
        if not q or k <= 0:
            return []
        prefix = _OBSERVED + q.encode() + b"\x00"
        merged = self.predicted(q, max(k, PREDICTED_PER_TOKEN))
        observed = {}
        for key, value in self.store.scan(prefix):
            eid = key[len(prefix) :].decode()
            observed[eid] = merged[eid] = self._combined(orjson.loads(value), now_ms)
        best = best_first(merged, k)
        # tuple.__new__: a named tuple's own constructor is a Python call, ~2x the cost here
        new = tuple.__new__
        return [
            new(Q2EScore, (e, s, "observed" if e in observed else "predicted")) for e, s in best
        ]
