"""The BERT encoder's forward pass as an ONNX graph run by onnxruntime (the ``fast`` extra).

The graph is built from the same weights the numpy pass uses (no file to download or convert)
and computes the same thing: embeddings, then per layer fused q/k/v, masked softmax
attention, GELU (the exact erf form) and the two layer norms. onnxruntime fuses and runs it on
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
GRAPH_VERSION = 1


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
    ``positions`` (length,) int64 and ``bias`` (batch, 1, 1, length) float32 (0 for a token,
    -1e9 for padding); output ``hidden`` (batch, length, dim), the last layer's states."""
    from onnx import TensorProto, helper

    encoder.load_weights()
    g = Graph()
    d, h = encoder.dim, encoder.heads
    eps = encoder.eps
    scale = g.weight("scale", np.array(1.0 / np.sqrt(d // h), np.float32))
    half = g.weight("half", np.array(0.5, np.float32))
    one = g.weight("one", np.array(1.0, np.float32))
    root_half = g.weight("root_half", np.array(1.0 / np.sqrt(2.0), np.float32))
    split_heads = g.weight("split_heads", np.array([0, 0, 3, h, d // h], np.int64))
    join_heads = g.weight("join_heads", np.array([0, 0, d], np.int64))
    thirds = [g.weight(f"third{j}", np.array(j, np.int64)) for j in range(3)]

    x = g.op(
        "Add",
        g.op("Gather", g.weight("word", encoder.word), "ids"),
        g.op("Gather", g.weight("position", encoder.position), "positions"),
    )
    x = g.op("Add", x, g.weight("token_type", encoder.token_type))
    ln_w, ln_b = encoder.emb_ln
    x = g.op("LayerNormalization", x, g.weight("emb_ln_w", ln_w), g.weight("emb_ln_b", ln_b),
             axis=-1, epsilon=eps)  # fmt: skip
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
        qkv = g.op("Add", g.op("MatMul", x, w["qkv_w"]), w["qkv_b"])
        # (batch, length, 3, heads, head dim) -> (3, batch, heads, length, head dim)
        qkv = g.op("Transpose", g.op("Reshape", qkv, split_heads), perm=[2, 0, 3, 1, 4])
        q, k, v = (g.op("Gather", qkv, index) for index in thirds)
        scores = g.op("Mul", g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2])), scale)
        probs = g.op("Softmax", g.op("Add", scores, "bias"), axis=-1)
        context = g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3])
        attended = g.op("Add", g.op("MatMul", g.op("Reshape", context, join_heads), w["o_w"]),
                        w["o_b"])  # fmt: skip
        x = g.op("LayerNormalization", g.op("Add", x, attended), w["ln1_w"], w["ln1_b"],
                 axis=-1, epsilon=eps)  # fmt: skip
        inner = g.op("Add", g.op("MatMul", x, w["i_w"]), w["i_b"])
        gelu = g.op("Mul", g.op("Mul", inner, half),
                    g.op("Add", g.op("Erf", g.op("Mul", inner, root_half)), one))  # fmt: skip
        out = g.op("Add", g.op("MatMul", gelu, w["out_w"]), w["out_b"])
        x = g.op("LayerNormalization", g.op("Add", x, out), w["ln2_w"], w["ln2_b"],
                 axis=-1, epsilon=eps)  # fmt: skip
    g.nodes.append(helper.make_node("Identity", [x], ["hidden"]))
    graph = helper.make_graph(
        g.nodes,
        "bert",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "length"]),
            helper.make_tensor_value_info("positions", TensorProto.INT64, ["length"]),
            helper.make_tensor_value_info("bias", TensorProto.FLOAT, ["batch", 1, 1, "length"]),
        ],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "length", d])],
        g.weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
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
        b, n = len(batch), max(len(ids) for ids in batch)
        ids = np.zeros((b, n), dtype=np.int64)
        mask = np.zeros((b, n), dtype=np.float32)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1.0
        bias = ((mask - 1.0) * np.float32(1e9))[:, None, None, :]
        (hidden,) = self.session.run(
            ["hidden"], {"ids": ids, "positions": np.arange(n, dtype=np.int64), "bias": bias}
        )
        pooled = (hidden * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.maximum(norms, 1e-12), dtype=np.float32)
