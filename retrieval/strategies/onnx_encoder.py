"""The sentence encoder run by ONNX Runtime: the same weights and, to float rounding, the same
vectors as the SentenceTransformer it is exported from, at a fraction of its per-call cost, and
without torch in the process.

Why: a query is a handful of tokens, so encoding one with torch is mostly Python and operator
dispatch overhead (about 3x the arithmetic); ONNX Runtime runs the whole graph in C++. Measured
on this project's 2-core machine for all-MiniLM-L6-v2 (``bench/serve.py``, docs/serving.md).

Export, once per model id, into ``<cache_dir>/encoders/<model slug>-<digest>.*``:

- ``.onnx``: the transformer followed by the model's own mean pooling and L2 normalization,
  exported with ``torch.onnx`` (TorchScript exporter, dynamic batch and sequence axes);
- ``.tokenizer.json``: the model's fast tokenizer (the ``tokenizers`` library reads it);
- ``.json``: dimension, maximum sequence length, padding token, and probe texts with the vectors
  the torch model gives them.

Files are written under temporary names and renamed, the ``.json`` last, so processes racing
to export leave whole files and a half-exported model is simply exported again. Every load
encodes the probe texts and compares them with the recorded torch vectors: a graph or tokenizer
that does not reproduce the model (cosine < ``MIN_COSINE``) is refused with ``OnnxUnusable``, and
the caller keeps the torch model. A load after the export imports neither torch nor
sentence-transformers (a lighter, faster start). Only models made of ``Transformer``, mean
``Pooling`` and ``Normalize`` (all-MiniLM-L6-v2 and most sentence-transformers models) export.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ltrr.schemas.exceptions import LtrrError

__all__ = ["MIN_COSINE", "OnnxEncoder", "OnnxUnusable", "cache_name", "exported_paths"]

#: Bumped when the exported files change (inputs, pooling, opset, metadata).
_EXPORT_FORMAT = 2
_OPSET = 17
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: The lowest cosine between an ONNX vector and the torch model's accepted at load.
MIN_COSINE = 0.9999
_PROBES = [
    "sad songs for when it rains",
    "jazz",
    "a much longer query, with punctuation and numbers 1984, to exercise padding",
]


class OnnxUnusable(LtrrError):
    """This model cannot be run by ONNX Runtime here (missing package, unsupported
    architecture, or exported files that do not reproduce the model)."""


def cache_name(model_id: str, identity: str) -> str:
    """``<model slug>-<sha1(identity)[:10]>``: a readable, collision-safe file or directory
    name for what ``identity`` describes of ``model_id``."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", Path(model_id).name).strip("-").lower()
    return f"{slug}-{hashlib.sha1(identity.encode()).hexdigest()[:10]}"


def exported_paths(model_id: str, cache_dir: Path) -> tuple[Path, Path, Path]:
    """Where the graph, the tokenizer and the metadata of ``model_id`` are (or will be)."""
    stem = cache_name(model_id, f"{model_id}|format {_EXPORT_FORMAT}|opset {_OPSET}")
    folder = Path(cache_dir) / "encoders"
    return folder / f"{stem}.onnx", folder / f"{stem}.tokenizer.json", folder / f"{stem}.json"


class OnnxEncoder:
    """``encode(texts)`` like ``SentenceTransformer.encode(..., normalize_embeddings=True)``
    for a model of Transformer + mean Pooling + Normalize, run by ONNX Runtime."""

    @classmethod
    def open(
        cls,
        model_id: str,
        cache_dir: Path,
        load_model: Callable[[], Any],
        *,
        threads: int = 1,
    ) -> OnnxEncoder:
        """The encoder of ``model_id`` from ``cache_dir``, exporting it first (from the
        SentenceTransformer ``load_model()`` returns) if it is not there."""
        graph, tokenizer, meta = exported_paths(model_id, cache_dir)
        if not (meta.exists() and graph.exists() and tokenizer.exists()):
            _export(load_model(), graph, tokenizer, meta)
        return cls(graph, tokenizer, meta, threads=threads)

    def __init__(self, graph: Path, tokenizer: Path, meta: Path, *, threads: int = 1) -> None:
        """Load exported files and check them against the recorded torch vectors;
        ``threads``: ONNX Runtime's intra-op threads."""
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise OnnxUnusable(f"onnxruntime is not installed ({exc})") from exc
        try:
            info = orjson.loads(meta.read_bytes())
            self.tokenizer = Tokenizer.from_file(str(tokenizer))
            options = ort.SessionOptions()
            options.intra_op_num_threads = max(1, threads)
            options.inter_op_num_threads = 1
            options.log_severity_level = 3  # errors only
            self._session = ort.InferenceSession(
                str(graph), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # missing, truncated or foreign files
            raise OnnxUnusable(
                f"cannot load the exported encoder {graph}: {exc}; delete {meta} to export anew"
            ) from exc
        self.path = graph
        self.dim = int(info["dim"])
        self.max_length = int(info["max_length"])
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.enable_padding(pad_id=int(info["pad_id"]), pad_token=info["pad_token"])
        reference = np.asarray(info["vectors"], dtype=np.float32)
        cosine = (self.encode(list(info["probes"])) * reference).sum(axis=1)
        if not float(cosine.min()) >= MIN_COSINE:
            raise OnnxUnusable(
                f"the exported encoder {graph} does not reproduce the model "
                f"(cosine {float(cosine.min()):.6f} < {MIN_COSINE}); delete {meta} to export anew"
            )

    def get_embedding_dimension(self) -> int:
        return self.dim

    def encode(self, texts: list[str], batch_size: int = 256, **_: Any) -> np.ndarray:
        """Unit-length float32 vectors, one row per text. Texts are encoded in batches of
        ``batch_size`` sorted by length (less padding); other keyword arguments of
        ``SentenceTransformer.encode`` are accepted and ignored (the output is always
        normalized numpy)."""
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = self._run([texts[i] for i in rows])
        return out

    def _run(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer.encode_batch(texts)
        feed = {
            "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64),
        }
        (vectors,) = self._session.run(None, feed)
        return np.asarray(vectors, dtype=np.float32)


def _check_architecture(model: Any) -> None:
    modules = [type(m).__name__ for m in model]
    if modules != ["Transformer", "Pooling", "Normalize"]:
        raise OnnxUnusable(f"only Transformer + Pooling + Normalize models export, not {modules}")
    pooling = model[1].get_config_dict()
    mean = pooling.get("pooling_mode", "mean") == "mean" or pooling.get("pooling_mode_mean_tokens")
    if not mean:
        raise OnnxUnusable(f"only mean pooling exports, not {pooling}")
    if getattr(model.tokenizer, "backend_tokenizer", None) is None:
        raise OnnxUnusable("the model has no fast (tokenizers) tokenizer to export")
    names = model.tokenizer("probe", return_tensors="np").keys()
    if set(_INPUTS) - set(names):
        raise OnnxUnusable(f"the tokenizer gives {sorted(names)}, the graph needs {_INPUTS}")


def _export(model: Any, graph: Path, tokenizer: Path, meta: Path) -> None:
    """Write the three files of ``model`` (see the module docstring), the metadata last."""
    try:
        import onnx  # noqa: F401  (torch.onnx needs it to write the file)
        import torch
    except ImportError as exc:
        raise OnnxUnusable(f"exporting the encoder needs torch and onnx ({exc})") from exc
    _check_architecture(model)
    sample = model.tokenizer(["a probe", "a longer probe text"], padding=True, return_tensors="pt")
    axes = {name: {0: "batch", 1: "sequence"} for name in _INPUTS}
    probes = np.asarray(
        model.encode(_PROBES, normalize_embeddings=True, convert_to_numpy=True,
                     show_progress_bar=False),
        dtype=np.float32,
    )  # fmt: skip
    info = {
        "format": _EXPORT_FORMAT,
        "dim": int(model.get_embedding_dimension()),
        "max_length": int(model.max_seq_length),
        "pad_id": int(model.tokenizer.pad_token_id or 0),
        "pad_token": str(model.tokenizer.pad_token or "[PAD]"),
        "probes": _PROBES,
        "vectors": probes.tolist(),
    }
    tmp = {p: p.with_name(f".{p.name}.{os.getpid()}.tmp") for p in (graph, tokenizer, meta)}
    try:
        graph.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer and deprecation warnings of the exporter
            torch.onnx.export(
                _pooled(model[0].auto_model),
                tuple(sample[name] for name in _INPUTS),
                str(tmp[graph]),
                input_names=list(_INPUTS),
                output_names=["embedding"],
                dynamic_axes={**axes, "embedding": {0: "batch"}},
                opset_version=_OPSET,
                dynamo=False,
            )
        model.tokenizer.backend_tokenizer.save(str(tmp[tokenizer]))
        tmp[meta].write_bytes(orjson.dumps(info))
        for final in (graph, tokenizer, meta):
            os.replace(tmp[final], final)
    except Exception as exc:  # a read-only cache dir, or a model the exporter cannot trace
        for path in tmp.values():
            path.unlink(missing_ok=True)
        raise OnnxUnusable(f"could not export the encoder to {graph}: {exc}") from exc


def _pooled(transformer: Any) -> Any:
    """Transformer, mean over the attention mask, L2 normalization: one module to export."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.transformer(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    return Pooled().eval()
