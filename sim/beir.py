"""A world from any IR test collection in BEIR layout, so LTR&R can be tried on your own data.

``DIR/corpus.jsonl`` (``{"_id", "title", "text"}`` per line) becomes the catalog (entity type
``document``, no popularity, all dated long ago), ``DIR/queries.jsonl`` (``{"_id", "text"}``)
the queries, and ``DIR/qrels/<split>.tsv`` (``query-id  corpus-id  score`` with a header line)
the hidden intents: documents with score > 0 are relevant, graded ``score / max score``.
Queries are drawn uniformly with replacement, seeded; their kind is ``short`` (up to three
words) or ``long``, so the report shows whether plan choice should depend on query length.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import orjson

from ltrr.schemas.exceptions import LtrrError
from ltrr.sim.world import Query


class BeirError(LtrrError):
    """The directory is not a usable BEIR-format collection; the message says what is wrong."""


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise BeirError(f"{path} is missing (BEIR layout: corpus.jsonl, queries.jsonl, qrels/)")
    rows = []
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise BeirError(f"{path}:{number}: not JSON: {exc}") from exc
            if not isinstance(row, dict) or "_id" not in row:
                raise BeirError(f'{path}:{number}: expected an object with "_id"')
            rows.append(row)
    return rows


class BeirWorld:
    name = "beir"

    def __init__(self, directory: Path, *, split: str = "test", seed: int = 7) -> None:
        self.directory = directory
        self.rng = random.Random(seed)
        corpus = _read_jsonl(directory / "corpus.jsonl")
        self.entities: list[dict[str, Any]] = []
        for doc in corpus:
            text = str(doc.get("text") or "")[:8000]
            title = str(doc.get("title") or "").strip() or text[:80].strip() or str(doc["_id"])
            self.entities.append(
                {
                    "schema_version": 1,
                    "id": str(doc["_id"])[:128],
                    "type": "document",
                    "title": title[:512],
                    "genres": [],
                    "popularity": 0.0,
                    "added_at_ms": 0,
                    "text": text or None,
                }
            )
        ids = {e["id"] for e in self.entities}
        queries = _read_jsonl(directory / "queries.jsonl")
        texts = {str(q["_id"]): str(q.get("text") or "") for q in queries}
        qrels_path = directory / "qrels" / f"{split}.tsv"
        if not qrels_path.is_file():
            raise BeirError(f"{qrels_path} is missing (choose the split with --beir-split)")
        grades: dict[str, dict[str, float]] = {}
        with qrels_path.open(newline="", encoding="utf-8") as f:
            for number, row in enumerate(csv.reader(f, delimiter="\t"), 1):
                if number == 1 and row and not row[-1].strip().lstrip("-").isdigit():
                    continue  # header
                if len(row) < 3:
                    raise BeirError(f"{qrels_path}:{number}: expected query-id, corpus-id, score")
                try:
                    score = float(row[2])
                except ValueError as exc:
                    raise BeirError(f"{qrels_path}:{number}: score {row[2]!r}") from exc
                if score > 0 and row[1] in ids and texts.get(row[0], "").strip():
                    grades.setdefault(row[0], {})[row[1]] = score
        if not grades:
            raise BeirError(f"no query in {qrels_path} has a relevant document in the corpus")
        self.queries = []
        for qid, docs in sorted(grades.items()):
            top = max(docs.values())
            self.queries.append((texts[qid].strip()[:512], {d: s / top for d, s in docs.items()}))

    def catalog(self) -> list[dict[str, Any]]:
        return [dict(e) for e in self.entities]

    def query(self, now_ms: int) -> Query:
        text, relevant = self.rng.choice(self.queries)
        kind = "short" if len(text.split()) <= 3 else "long"
        return Query(text, kind, relevant, {}, f"u{self.rng.randrange(100)}")

    def release(self, now_ms: int) -> dict[str, Any] | None:
        return None
