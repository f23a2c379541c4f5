"""A music-search world: a generated catalog and users whose queries need different strategies.

Everything is drawn from one seeded ``random.Random``, so a seed reproduces the catalog, the
query stream and the new releases exactly. Query kinds, and the strategy that should serve
each (the learner is never told the kind; the report groups by it):

=============  ==========================================  =====================================
kind           example                                      relevant entities (hidden intent)
=============  ==========================================  =====================================
``exact``      ``"velora nights"`` (a title, maybe +artist)  that entity (lexical finds it)
``describe``   ``"sad tunes after a breakup"``               every entity of that theme; their
                                                            texts share no words with the query
                                                            (semantic finds them)
``misspell``   ``"tayler swfit"``, ``"tswift"``               that entity; a few fixed variants
                                                            per popular entity, so they repeat
                                                            (memory learns them from clicks)
``head``       ``"love"``, ``"top hits"``                     the most popular matching entity,
                                                            drawn by popularity^3 (popular)
``fresh``      ``"new synthwave releases"``                  entities of that genre released in
                                                            the last ``fresh_days`` (fresh)
=============  ==========================================  =====================================

Popularity follows a power law over a random permutation of the catalog. New entities are
released during the run (``release``) with ``added_at_ms`` = the simulated now.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

DAY_MS = 86_400_000

KINDS = ("exact", "describe", "misspell", "head", "fresh")
DEFAULT_MIX: Mapping[str, float] = {
    "exact": 0.25,
    "describe": 0.2,
    "misspell": 0.2,
    "head": 0.15,
    "fresh": 0.2,
}

GENRES = (
    "pop", "rock", "jazz", "classical", "electronic", "country", "metal", "folk", "reggae",
    "blues", "soul", "ambient", "synthwave", "punk", "funk", "gospel",
)  # fmt: skip
HEAD_WORDS = ("love", "night", "heart", "fire", "summer", "dream", "gold", "home")
GENERIC_HEAD = ("top hits", "popular right now", "trending", "most played", "charts")
_SYLLABLES = (
    "ka", "lo", "mi", "ra", "ve", "no", "sa", "ti", "lu", "da", "ze", "ri", "mo", "na", "fe",
    "qu", "pa", "sho", "ren", "vel", "dor", "mar", "lin", "tos", "bri", "ce", "xa", "jo",
)  # fmt: skip

#: Themes: catalog-side phrasing vs. user-side phrasing with no content word in common.
THEMES: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "focus": (
        ("instrumental pieces that help you concentrate while studying",),
        ("background tunes for doing homework", "music to work without distraction"),
    ),
    "workout": (
        ("high energy tracks to push through a gym session",),
        ("pump up songs for running", "intense beats for lifting weights"),
    ),
    "sleep": (
        ("soft calm soundscapes to drift off at bedtime",),
        ("relaxing audio to fall asleep", "gentle noise for a restful evening"),
    ),
    "party": (
        ("upbeat dance anthems for a crowded club",),
        ("songs to get everyone moving at a celebration", "music for a wild bash"),
    ),
    "heartbreak": (
        ("tearful ballads about losing a lover",),
        ("sad tunes after a breakup", "songs for when someone leaves you"),
    ),
    "roadtrip": (
        ("driving anthems for long highway journeys",),
        ("music for a car ride across the country", "songs for travelling by auto"),
    ),
    "morning": (
        ("bright cheerful melodies to start the day",),
        ("happy wake up music", "sunrise coffee songs"),
    ),
    "romance": (
        ("tender ballads for a candlelit dinner with your partner",),
        ("romantic date music", "songs to set an intimate mood"),
    ),
    "meditation": (
        ("peaceful ambient drones for mindfulness practice",),
        ("zen music to clear your mind", "tunes for breathing exercises and yoga"),
    ),
    "rage": (
        ("aggressive heavy riffs for venting anger",),
        ("furious loud music when mad", "songs to scream along when irritated"),
    ),
    "beach": (
        ("sunny seaside tracks for hot july days",),
        ("warm weather poolside songs", "music for lying on the sand by the ocean"),
    ),
    "holiday": (
        ("festive carols for december celebrations",),
        ("xmas music for decorating the tree", "songs about santa and snow"),
    ),
}


#: Ways users wrap a description, so descriptions rarely repeat verbatim.
_ASK_PREFIX = ("", "", "some", "best", "good", "i need", "play me", "looking for", "any")
_ASK_SUFFIX = ("", "", "please", "today", "right now", "for tonight", "this week", "again")


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(syllables))


def _name(rng: random.Random, words: int) -> str:
    return " ".join(_word(rng, rng.randint(2, 3)).capitalize() for _ in range(words))


def misspellings(text: str, rng: random.Random, n: int = 2) -> list[str]:
    """``n`` deterministic misspelled variants of ``text`` (swap, drop or double a letter in
    each word longer than three letters; at least one word changed)."""
    out: list[str] = []
    words = text.lower().split()
    for _ in range(n * 4):
        if len(out) == n:
            break
        changed = []
        for word in words:
            if len(word) > 3 and rng.random() < 0.8:
                i = rng.randrange(1, len(word) - 1)
                op = rng.choice(("swap", "drop", "double", "vowel"))
                if op == "swap":
                    word = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
                elif op == "drop":
                    word = word[:i] + word[i + 1 :]
                elif op == "double":
                    word = word[:i] + word[i] + word[i:]
                else:
                    vowels = "aeiouy"
                    j = next((k for k in range(i, len(word)) if word[k] in vowels), i)
                    word = word[:j] + rng.choice(vowels.replace(word[j], "") or "e") + word[j + 1 :]
            changed.append(word)
        variant = " ".join(changed)
        if variant != text.lower() and variant not in out:
            out.append(variant)
    return out


@dataclass(frozen=True, slots=True)
class Query:
    """One simulated query: what the user typed, the hidden intent and its kind."""

    text: str
    kind: str
    relevant: Mapping[str, float]  # entity id -> grade in (0, 1]
    context: Mapping[str, Any] = field(default_factory=dict)
    user_id: str = ""


@dataclass(frozen=True, slots=True)
class WorldConfig:
    entities: int = 2000
    seed: int = 7
    mix: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    #: Power-law exponent of popularity over the popularity rank.
    popularity_exponent: float = 1.0
    #: How many of the most popular tracks, artists and albums have misspelled variants.
    misspelled_entities: int = 60
    #: Entities of each theme in the catalog.
    per_theme: int = 6
    #: New entities already in the catalog at start, per genre (released in the last days).
    fresh_per_genre: int = 2
    #: What "new" means to users, days.
    fresh_days: float = 7.0
    users: int = 500


class MusicWorld:
    """The catalog, the query stream and new releases of a seeded music world."""

    name = "music"

    def __init__(self, config: WorldConfig | None = None, *, now_ms: int = 0) -> None:
        self.config = config or WorldConfig()
        self.rng = random.Random(self.config.seed)
        self.start_ms = now_ms
        self.entities: dict[str, dict[str, Any]] = {}
        self._released = 0
        self._build(now_ms)
        mix = {k: v for k, v in self.config.mix.items() if v > 0}
        unknown = set(mix) - set(KINDS)
        if unknown or not mix:
            raise ValueError(f"query mix kinds must be among {KINDS}, got {sorted(mix)}")
        self.kinds = tuple(mix)
        self.weights = tuple(mix[k] for k in self.kinds)

    # ---- catalog -------------------------------------------------------------------------
    def _add(self, entity: dict[str, Any]) -> None:
        entity.setdefault("schema_version", 1)
        self.entities[entity["id"]] = entity

    def _build(self, now_ms: int) -> None:
        rng, cfg = self.rng, self.config
        n = max(cfg.entities, 200)
        n_artists = max(20, n // 10)
        artists = []
        for i in range(n_artists):
            name = _name(rng, rng.choice((1, 2, 2)))
            genre = rng.choice(GENRES)
            artists.append((f"artist:{i}", name, genre))
            self._add(
                {
                    "id": f"artist:{i}",
                    "type": "artist",
                    "title": name,
                    "artist": name,
                    "genres": [genre],
                    "text": f"{genre} artist",
                }
            )
        themed = len(THEMES) * cfg.per_theme
        n_albums = n // 10
        for i in range(n_albums):
            _, name, genre = rng.choice(artists)
            self._add(
                {
                    "id": f"album:{i}",
                    "type": "album",
                    "title": self._title(),
                    "artist": name,
                    "genres": [genre],
                    "text": f"{genre} album by {name}",
                }
            )
        for theme, (texts, _) in THEMES.items():
            for j in range(cfg.per_theme):
                kind = ("playlist", "station", "track")[j % 3]
                _, name, genre = rng.choice(artists)
                title = _name(rng, 2) if kind != "track" else self._title()
                self._add(
                    {
                        "id": f"{kind}:{theme}-{j}",
                        "type": kind,
                        "title": title,
                        "artist": name if kind == "track" else None,
                        "genres": [genre, theme],
                        "text": rng.choice(texts),
                    }
                )
        n_podcasts = n // 40
        for i in range(n_podcasts):
            self._add(
                {
                    "id": f"podcast:{i}",
                    "type": "podcast",
                    "title": f"The {_name(rng, 1)} Show",
                    "artist": _name(rng, 2),
                    "genres": ["talk"],
                    "text": "conversations and interviews",
                }
            )
        fresh = cfg.fresh_per_genre * len(GENRES)
        for i in range(max(0, n - n_artists - n_albums - themed - n_podcasts - fresh)):
            _, name, genre = rng.choice(artists)
            self._add(
                {
                    "id": f"track:{i}",
                    "type": "track",
                    "title": self._title(),
                    "artist": name,
                    "genres": [genre],
                    "text": f"{genre} track by {name}",
                }
            )
        # Popularity: power law over a random permutation; dates: the last two years.
        ids = list(self.entities)
        rng.shuffle(ids)
        for rank, entity_id in enumerate(ids):
            entity = self.entities[entity_id]
            entity["popularity"] = round((rank + 1) ** -cfg.popularity_exponent, 6)
            entity["added_at_ms"] = max(0, now_ms - rng.randint(60, 730) * DAY_MS)
        for genre in GENRES:
            for _ in range(cfg.fresh_per_genre):
                self._release(genre, now_ms - rng.randint(0, int(cfg.fresh_days) - 1) * DAY_MS)
        self._misspelled: list[tuple[str, list[str]]] = []
        navigable = [e for e in self.entities.values() if e["type"] in ("track", "artist", "album")]
        navigable.sort(key=lambda e: -e["popularity"])
        for entity in navigable[: cfg.misspelled_entities]:
            variants = misspellings(entity["title"], rng)
            if variants:
                self._misspelled.append((entity["id"], variants))
        self._navigable = navigable
        self._nav_weights = [e["popularity"] ** 0.5 for e in navigable]

    def _title(self) -> str:
        rng = self.rng
        words = [_word(rng, rng.randint(2, 3)) for _ in range(rng.choice((1, 2, 2, 3)))]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words) + 1), rng.choice(HEAD_WORDS))
        return " ".join(w.capitalize() for w in words)

    def _release(self, genre: str, at_ms: int) -> dict[str, Any]:
        rng = self.rng
        artist = rng.choice([e for e in self.entities.values() if e["type"] == "artist"])
        self._released += 1
        entity = {
            "schema_version": 1,
            "id": f"new:{self.config.seed}-{self._released}",
            "type": rng.choice(("track", "track", "album")),
            "title": self._title(),
            "artist": artist["title"],
            "genres": [genre],
            "popularity": round(rng.uniform(0.001, 0.05), 6),
            "added_at_ms": max(0, at_ms),
            "text": f"{genre} track by {artist['title']}",
        }
        self._add(entity)
        return entity

    def catalog(self) -> list[dict[str, Any]]:
        """The catalog at start (CatalogEntity v1 dicts)."""
        return [dict(e) for e in self.entities.values()]

    def release(self, now_ms: int) -> dict[str, Any]:
        """A new entity released now (publish it to the catalog topic)."""
        return dict(self._release(self.rng.choice(GENRES), now_ms))

    # ---- queries -------------------------------------------------------------------------
    def query(self, now_ms: int) -> Query:
        """The next user query."""
        rng = self.rng
        kind = rng.choices(self.kinds, self.weights)[0]
        user = f"u{rng.randrange(self.config.users)}"
        query = getattr(self, f"_{kind}")(now_ms)
        return Query(query[0], kind, query[1], {"device": rng.choice(("ios", "web"))}, user)

    def queries(self, n: int, now_ms: int) -> Iterator[Query]:
        for _ in range(n):
            yield self.query(now_ms)

    def _exact(self, now_ms: int) -> tuple[str, dict[str, float]]:
        entity = self.rng.choices(self._navigable, self._nav_weights)[0]
        text = entity["title"].lower()
        if entity["type"] == "track" and self.rng.random() < 0.3:
            text = f"{text} {entity['artist'].lower()}"
        return text, {entity["id"]: 1.0}

    def _describe(self, now_ms: int) -> tuple[str, dict[str, float]]:
        rng = self.rng
        theme = rng.choice(list(THEMES))
        text = rng.choice(THEMES[theme][1])
        prefix, suffix = rng.choice(_ASK_PREFIX), rng.choice(_ASK_SUFFIX)
        text = " ".join(part for part in (prefix, text, suffix) if part)
        relevant = {e["id"]: 1.0 for e in self.entities.values() if theme in e.get("genres", ())}
        return text, relevant

    def _misspell(self, now_ms: int) -> tuple[str, dict[str, float]]:
        weights = [self.entities[i]["popularity"] ** 0.5 for i, _ in self._misspelled]
        entity_id, variants = self.rng.choices(self._misspelled, weights)[0]
        return self.rng.choice(variants), {entity_id: 1.0}

    def _head(self, now_ms: int) -> tuple[str, dict[str, float]]:
        rng = self.rng
        if rng.random() < 0.5:
            word = rng.choice(HEAD_WORDS)
            pool = [e for e in self.entities.values() if word in e["title"].lower().split()]
            text = word
        else:
            pool = sorted(self.entities.values(), key=lambda e: -e["popularity"])[:30]
            text = rng.choice(GENERIC_HEAD)
        if not pool:
            return self._exact(now_ms)
        entity = rng.choices(pool, [e["popularity"] ** 3 for e in pool])[0]
        return text, {entity["id"]: 1.0}

    def _fresh(self, now_ms: int) -> tuple[str, dict[str, float]]:
        rng = self.rng
        horizon = now_ms - int(self.config.fresh_days * DAY_MS)
        recent = [e for e in self.entities.values() if horizon <= e["added_at_ms"] <= now_ms]
        genres = sorted({e["genres"][0] for e in recent})
        if not genres:
            return self._exact(now_ms)
        genre = rng.choice(genres)
        text = rng.choice(("new {} releases", "latest {}", "new {} music", "fresh {}")).format(
            genre
        )
        return text, {e["id"]: 1.0 for e in recent if e["genres"][0] == genre}
