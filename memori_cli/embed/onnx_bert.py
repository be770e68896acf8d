"""The BERT encoder's forward pass as an ONNX graph run by onnxruntime (the ``fast`` extra).

The graph is built from the same weights the numpy pass uses (no file to download or convert)
and computes the same thing: embeddings, then per layer fused q/k/v, masked softmax
attention, GELU (the exact erf form) and the two layer norms, as onnxruntime's own fused
operators (see :func:`build`). onnxruntime runs it on
all cores: on two, about twice as fast as numpy batched on short turns and 1.6 times on long
ones or one query; the vectors agree with the numpy pass to cosine 0.99999 (the test suite
checks it).

Building the graph takes about two seconds (importing onnx included), so it is built once and
kept in ``$MEMORI_HOME/models/onnx/``, named after the weights file it was made from; a later
process loads it in a fraction of that.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .. import paths
from ..errors import MemoriError

log = logging.getLogger("memori.embed")

#: Raised whenever :func:`build` makes a different graph, so older cached graphs are not used.
GRAPH_VERSION = 2


class Weights(Protocol):
    """What a graph is built from: a BERT encoder's prepared weights (:class:`.bert.BertEncoder`
    has them; this module does not import it, since the encoder chooses this pass)."""

    dim: int
    heads: int
    eps: float
    word: np.ndarray
    position: np.ndarray
    token_type: np.ndarray
    emb_ln: tuple[np.ndarray, np.ndarray]

    @property
    def layers(self) -> Sequence[tuple[np.ndarray, ...]]:
        """Per layer: q/k/v, output, two layer norms and the feed-forward weights."""
        ...

    #: The weights file: its identity names the cached graph.
    weights: Path

    def load_weights(self) -> None:
        """Fill the arrays above (they may be empty until a graph is built)."""


def available() -> bool:
    """Whether onnxruntime and onnx (to build the graph) are importable."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


class Graph:
    """Collects an ONNX graph's nodes and weights; each ``op`` returns its output's name."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.weights: list[Any] = []

    def weight(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        # Not ascontiguousarray: it makes a scalar (a Gather index) a one-element array.
        self.weights.append(numpy_helper.from_array(np.require(array, requirements="C"), name))
        return name

    def op(self, kind: str, *inputs: str, **attributes: Any) -> str:
        from onnx import helper

        output = f"{kind}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(kind, list(inputs), [output], **attributes))
        return output


def build(encoder: Weights) -> bytes:
    """The serialised ONNX model of ``encoder``: inputs ``ids`` (batch, length) int64,
    ``positions`` (length,) int64 and ``lengths`` (batch,) int32 (each row's real tokens, the
    rest padding); output ``hidden`` (batch, length, dim), the last layer's states.

    Each layer is onnxruntime's own fused operators (``com.microsoft``: ``Attention`` with
    the packed q/k/v weights, ``BiasGelu``, the exact erf GELU, and
    ``SkipLayerNormalization``), which compute what the numpy pass does. Against the same
    layer written in plain ONNX operators (graph version 1), the vectors agree to cosine
    0.9999999 and batches are a little faster (``scripts/bench_recall.py``, two runs side by
    side on two loaded cores: 442-471 against 427-436 short sentences/s, 86-92 against 80-81
    turns of 128 word pieces/s; one sentence the same, 4.5-5.3 ms against 4.4-5.0): the
    matrix products, which are the same, are most of the work.
    """
    from onnx import TensorProto, helper

    encoder.load_weights()
    g = Graph()
    eps = encoder.eps
    x = g.op(
        "Add",
        g.op("Gather", g.weight("word", encoder.word), "ids"),
        g.op("Gather", g.weight("position", encoder.position), "positions"),
    )
    x = g.op("Add", x, g.weight("token_type", encoder.token_type))
    ln_w, ln_b = encoder.emb_ln
    x = g.op("LayerNormalization", x, g.weight("emb_ln_w", ln_w), g.weight("emb_ln_b", ln_b),
             axis=-1, epsilon=eps)  # fmt: skip
    ms = "com.microsoft"
    for i, layer in enumerate(encoder.layers):
        w = {
            name: g.weight(f"l{i}.{name}", array)
            for name, array in zip(
                ("qkv_w", "qkv_b", "o_w", "o_b", "ln1_w", "ln1_b", "i_w", "i_b", "out_w", "out_b",
                 "ln2_w", "ln2_b"),
                layer,
                strict=True,
            )
        }  # fmt: skip
        # "lengths" as the mask: keys past a row's length are never attended to.
        context = g.op("Attention", x, w["qkv_w"], w["qkv_b"], "lengths", domain=ms,
                       num_heads=encoder.heads)  # fmt: skip
        # SkipLayerNormalization(a, x, gamma, beta, bias) = LayerNorm(a + x + bias)
        x = g.op("SkipLayerNormalization", g.op("MatMul", context, w["o_w"]), x, w["ln1_w"],
                 w["ln1_b"], w["o_b"], domain=ms, epsilon=eps)  # fmt: skip
        inner = g.op("BiasGelu", g.op("MatMul", x, w["i_w"]), w["i_b"], domain=ms)
        x = g.op("SkipLayerNormalization", g.op("MatMul", inner, w["out_w"]), x, w["ln2_w"],
                 w["ln2_b"], w["out_b"], domain=ms, epsilon=eps)  # fmt: skip
    g.nodes.append(helper.make_node("Identity", [x], ["hidden"]))
    graph = helper.make_graph(
        g.nodes,
        "bert",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "length"]),
            helper.make_tensor_value_info("positions", TensorProto.INT64, ["length"]),
            helper.make_tensor_value_info("lengths", TensorProto.INT32, ["batch"]),
        ],
        [
            helper.make_tensor_value_info(
                "hidden", TensorProto.FLOAT, ["batch", "length", encoder.dim]
            )
        ],
        g.weights,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(ms, 1)]
    )
    model.ir_version = 9  # what onnxruntime 1.17 and later read
    return bytes(model.SerializeToString())


def cached_graph(encoder: Weights) -> Path | None:
    """The encoder's graph file in the model cache, built and written there first if missing;
    None where the cache cannot be written (then the caller builds one for the moment)."""
    weights = encoder.weights
    stat = weights.stat()
    identity = f"{GRAPH_VERSION}:{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    folder = paths.data_dir() / "models" / "onnx"
    path = (
        folder / f"{weights.parent.name}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.onnx"
    )
    if path.is_file():
        return path
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        paths.ensure_private_dir(folder)
        partial.write_bytes(build(encoder))
        os.replace(partial, path)  # whole or not at all, beside another process doing the same
    except (OSError, MemoriError) as exc:
        log.info("cannot keep the ONNX graph in %s (%s): building it for this process", folder, exc)
        with contextlib.suppress(OSError):
            partial.unlink()
        return None
    return path


class OnnxForward:
    """A BERT encoder's forward pass through onnxruntime: token ids in, pooled unit vectors
    out, like the numpy pass of :class:`.bert.BertEncoder`."""

    def __init__(self, encoder: Weights):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # warnings about the graph are not the user's business
        # Worker threads sleep as soon as a run ends instead of spinning a while: spinning
        # gave a quarter more batch throughput on two cores, but held the cores while numpy
        # searched vectors next, and one recall at 10k messages took 20 ms instead of 12.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Loaded from a file, not from bytes: a session made from bytes keeps them (the
        # weights a second time, 90 MB for MiniLM) for as long as it lives.
        cached = cached_graph(encoder)
        if cached is not None:
            try:
                self.session = onnxruntime.InferenceSession(
                    str(cached), options, providers=["CPUExecutionProvider"]
                )
                return
            except Exception as exc:  # a damaged cache file: build afresh
                log.warning(
                    "the cached ONNX graph %s is unreadable (%s): rebuilding it", cached, exc
                )
                with contextlib.suppress(OSError):
                    cached.unlink()
        with tempfile.TemporaryDirectory(prefix="memori-onnx-") as folder:
            path = Path(folder) / "model.onnx"
            path.write_bytes(build(encoder))
            self.session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )

    def __call__(self, batch: list[list[int]]) -> np.ndarray:
        lengths = np.array([len(seq) for seq in batch], dtype=np.int32)
        n = int(lengths.max())
        ids = np.zeros((len(batch), n), dtype=np.int64)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
        mask = (np.arange(n) < lengths[:, None]).astype(np.float32)
        (hidden,) = self.session.run(
            ["hidden"],
            {"ids": ids, "positions": np.arange(n, dtype=np.int64), "lengths": lengths},
        )
        pooled = (hidden * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.maximum(norms, 1e-12), dtype=np.float32)
