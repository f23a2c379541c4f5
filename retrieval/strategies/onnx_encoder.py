"""The sentence encoder run by ONNX Runtime: the same weights and, to float rounding, the same
vectors as the SentenceTransformer it is exported from, at a fraction of its per-call cost.

Why: a query is a handful of tokens, so encoding one with torch is mostly Python and operator
dispatch overhead (about 3x the arithmetic); ONNX Runtime runs the whole graph in C++. Measured
on this project's 2-core machine for all-MiniLM-L6-v2 (``bench/encoder.py``, ``bench/serve.py``).

The graph is the transformer followed by the model's own mean pooling and L2 normalization,
exported once with ``torch.onnx`` (TorchScript exporter, dynamic batch and sequence axes) into
``<cache_dir>/encoders/<model slug>-<digest>.onnx``; the digest covers the model id, torch's
version and this module's export format, so a new torch or model exports anew. The file is
written under a temporary name and renamed, so processes racing to export leave one whole file.
Every load checks the graph against the torch model on probe texts: a graph whose vectors are
not the model's (cosine < ``MIN_COSINE``) is refused with ``OnnxUnusable`` and the caller keeps
the torch model. Only models made of ``Transformer``, mean ``Pooling`` and ``Normalize``
(all-MiniLM-L6-v2 and most sentence-transformers models) can be exported this way.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ltrr.schemas.exceptions import LtrrError

__all__ = ["MIN_COSINE", "OnnxEncoder", "OnnxUnusable"]

#: Bumped when the exported graph changes (inputs, pooling, opset).
_EXPORT_FORMAT = 1
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
    architecture, or an exported graph that does not reproduce the model)."""


class OnnxEncoder:
    """``encode(texts)`` like ``SentenceTransformer.encode(..., normalize_embeddings=True)``
    for a model of Transformer + mean Pooling + Normalize, run by ONNX Runtime."""

    def __init__(self, model: Any, model_id: str, cache_dir: Path, *, threads: int = 1) -> None:
        """``model``: the loaded SentenceTransformer (for its tokenizer, and to export from and
        check against); ``threads``: ONNX Runtime's intra-op threads."""
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise OnnxUnusable(f"onnxruntime is not installed ({exc})") from exc
        _check_architecture(model)
        self.tokenizer = model.tokenizer
        self.max_length = int(model.max_seq_length)
        self.dim = int(model.get_embedding_dimension())
        self.path = _export(model, model_id, Path(cache_dir))
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        self._session = ort.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )
        reference = np.asarray(
            model.encode(_PROBES, normalize_embeddings=True, convert_to_numpy=True,
                         show_progress_bar=False),
            dtype=np.float32,
        )  # fmt: skip
        cosine = (self.encode(_PROBES) * reference).sum(axis=1)
        if not float(cosine.min()) >= MIN_COSINE:
            raise OnnxUnusable(
                f"the ONNX graph {self.path} does not reproduce the model "
                f"(cosine {float(cosine.min()):.6f} < {MIN_COSINE}); delete it to export anew"
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
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np"
        )
        feed = {name: np.asarray(encoded[name], dtype=np.int64) for name in _INPUTS}
        (vectors,) = self._session.run(None, feed)
        return np.asarray(vectors, dtype=np.float32)


def _check_architecture(model: Any) -> None:
    modules = [type(m).__name__ for m in model]
    if modules != ["Transformer", "Pooling", "Normalize"]:
        raise OnnxUnusable(f"only Transformer + Pooling + Normalize models export, not {modules}")
    pooling = model[1].get_config_dict()
    if pooling.get("pooling_mode", "mean") != "mean" and not pooling.get(
        "pooling_mode_mean_tokens"
    ):
        raise OnnxUnusable(f"only mean pooling exports, not {pooling}")
    names = model.tokenizer("probe", return_tensors="np").keys()
    if set(_INPUTS) - set(names):
        raise OnnxUnusable(f"the tokenizer gives {sorted(names)}, the graph needs {_INPUTS}")


def _export(model: Any, model_id: str, cache_dir: Path) -> Path:
    """The exported graph's path, exporting it first if it is not there."""
    import torch

    slug = re.sub(r"[^A-Za-z0-9]+", "-", Path(model_id).name).strip("-").lower()
    identity = f"{model_id}|torch {torch.__version__}|format {_EXPORT_FORMAT}|opset {_OPSET}"
    path = (
        cache_dir / "encoders" / f"{slug}-{hashlib.sha1(identity.encode()).hexdigest()[:10]}.onnx"
    )
    if path.exists():
        return path
    try:
        import onnx  # noqa: F401  (torch.onnx needs it to write the file)
    except ImportError as exc:
        raise OnnxUnusable(f"exporting the encoder needs the onnx package ({exc})") from exc
    graph = _pooled(model[0].auto_model)
    sample = model.tokenizer(["a probe", "a longer probe text"], padding=True, return_tensors="pt")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    axes = {name: {0: "batch", 1: "sequence"} for name in _INPUTS}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer and deprecation warnings of the exporter
            torch.onnx.export(
                graph,
                tuple(sample[name] for name in _INPUTS),
                str(tmp),
                input_names=list(_INPUTS),
                output_names=["embedding"],
                dynamic_axes={**axes, "embedding": {0: "batch"}},
                opset_version=_OPSET,
                dynamo=False,
            )
        os.replace(tmp, path)
    except Exception as exc:  # a read-only cache dir, or a model the exporter cannot trace
        tmp.unlink(missing_ok=True)
        raise OnnxUnusable(f"could not export the encoder to {path}: {exc}") from exc
    return path


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
