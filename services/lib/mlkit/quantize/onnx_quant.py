"""Quantize an exported ONNX causal LM (optimum layout) in onnxruntime's formats.

- ``quantize_matmul_nbits``: every MatMul with a constant weight becomes ``MatMulNBits`` (block-wise
  along K, asymmetric, 4 or 8 bits). With ``accuracy_level=4`` onnxruntime also quantizes the
  activations to int8 per block of K for each row, and multiplies in int8: with 8-bit weights that is
  a W8A8 kernel whose activation scales follow every token.
- ``quantize_matmul_float_zero``: MatMul → ``MatMulNBits`` whose zero points are floats: each block's
  [min, max] maps exactly onto the 2^bits levels (the Q4_1 layout of GGUF), at 4 more bytes per
  block than a packed integer zero point.
- ``quantize_matmul_int8_dynamic``: the classic W8A8 path (DynamicQuantizeLinear + MatMulInteger):
  weights int8 per output channel, activations uint8 with one dynamic scale per tensor.
- ``quantize_embeddings``: the token embedding (``Gather``) and, when the LM head is tied to it
  (``MatMul(x, Transpose(E))``, as the exporter writes tied weights), the head too, sharing one
  quantized copy: ``MatMulNBits`` for the head and ``GatherBlockQuantized`` reading the same packed
  bytes for the lookup, the layout onnxruntime-genai uses for shared embeddings.

All functions take and return ``onnx.ModelProto``; ``load`` / ``save`` handle the >2 GB external-data case.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
EXTERNAL_DATA_FILE = "model.onnx_data"
_PROTO_LIMIT = 1_800_000_000   # protobuf's 2 GB cap, with room for the graph itself


def load(folder: Path) -> onnx.ModelProto:
    return onnx.load(str(Path(folder) / ONNX_FILE), load_external_data=True)


def save(model: onnx.ModelProto, folder: Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ONNX_FILE
    (folder / EXTERNAL_DATA_FILE).unlink(missing_ok=True)
    large = model.ByteSize() > _PROTO_LIMIT
    onnx.save_model(model, str(path), save_as_external_data=large, all_tensors_to_one_file=True,
                    location=EXTERNAL_DATA_FILE if large else None)
    return path


def model_bytes(folder: Path) -> int:
    """Bytes of the weights and graph on disk (model.onnx plus external data)."""
    folder = Path(folder)
    return sum(p.stat().st_size for p in (folder / ONNX_FILE, folder / EXTERNAL_DATA_FILE) if p.is_file())


def _initializers(model: onnx.ModelProto) -> dict[str, TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _consumers(model: onnx.ModelProto) -> Counter:
    return Counter(name for node in model.graph.node for name in node.input)


def _blockwise(weight_kn: np.ndarray, *, bits: int, block_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """onnxruntime's own block quantizer (C++): weight [K, N] → packed [N, k_blocks, blob], scales, zero points."""
    from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                 DefaultWeightOnlyQuantizer)

    quantizer = DefaultWeightOnlyQuantizer(DefaultWeightOnlyQuantConfig(
        block_size=block_size, is_symmetric=False, bits=bits))
    return quantizer.qbits_block_quant(np.ascontiguousarray(weight_kn, dtype=np.float32))


def quantize_matmul_nbits(model: onnx.ModelProto, *, bits: int, block_size: int, accuracy_level: int = 0,
                          exclude: list[str] | None = None) -> onnx.ModelProto:
    """MatMul with constant weights → MatMulNBits (4 or 8 bits, asymmetric, block_size along K)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                 MatMulNBitsQuantizer)

    config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=False, bits=bits,
                                          accuracy_level=accuracy_level or None, op_types_to_quantize=("MatMul",))
    quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block_size, is_symmetric=False,
                                     accuracy_level=accuracy_level or None, nodes_to_exclude=exclude or [],
                                     algo_config=config)
    quantizer.process()
    return quantizer.model.model


def _pack_float_zero(weight_kn: np.ndarray, *, bits: int, block_size: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """weight [K, N] → packed [N, k_blocks, block·bits/8] (low bits first), scales and float zero
    points [N·k_blocks], with w ≈ (q - zero) · scale and q spanning each block's [min, max]."""
    k, n = weight_kn.shape
    pad = (-k) % block_size
    w = np.pad(weight_kn.T.astype(np.float32), ((0, 0), (0, pad)))   # padding 0s sit inside any block's range
    blocks = w.reshape(n, -1, block_size)
    lo, hi = blocks.min(-1, keepdims=True), blocks.max(-1, keepdims=True)
    qmax = 2 ** bits - 1
    scale = np.maximum((hi - lo) / qmax, 1e-10).astype(np.float32)
    q = np.clip(np.rint((blocks - lo) / scale), 0, qmax).astype(np.uint8)
    if bits == 4:
        q = q[..., 0::2] | (q[..., 1::2] << 4)
    zero = (-lo / scale).astype(np.float32)
    return q, scale.reshape(-1), zero.reshape(-1)


def quantize_matmul_float_zero(model: onnx.ModelProto, *, bits: int, block_size: int,
                               nodes: set[str] | None = None) -> list[str]:
    """MatMul nodes (all with a constant 2-D float weight, or only those named in ``nodes``) →
    MatMulNBits with float zero points, in place; returns the names of the nodes it replaced."""
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    inits = _initializers(model)
    graph = model.graph
    done: list[str] = []
    for node in [n for n in graph.node if n.op_type == "MatMul"]:
        tensor = inits.get(node.input[1])
        if tensor is None or tensor.data_type != TensorProto.FLOAT or len(tensor.dims) != 2:
            continue
        if nodes is not None and node.name not in nodes:
            continue
        k, n = tensor.dims
        packed, scales, zero = _pack_float_zero(numpy_helper.to_array(tensor), bits=bits, block_size=block_size)
        base = f"{node.input[1]}_Q{bits}F"
        graph.initializer.extend([numpy_helper.from_array(packed, f"{base}_packed"),
                                  numpy_helper.from_array(scales, f"{base}_scales"),
                                  numpy_helper.from_array(zero, f"{base}_zp")])
        position = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(position, helper.make_node(
            "MatMulNBits", [node.input[0], f"{base}_packed", f"{base}_scales", f"{base}_zp"], list(node.output),
            name=f"{node.name}_Q{bits}", domain="com.microsoft", K=k, N=n, bits=bits, block_size=block_size))
        done.append(node.name)
    unused = {t.name for t in graph.initializer} - set(_consumers(model))
    for i in reversed([i for i, t in enumerate(graph.initializer) if t.name in unused and t.name in inits]):
        del graph.initializer[i]
    if done and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return done


def quantize_matmul_int8_dynamic(model: onnx.ModelProto, *, exclude: list[str] | None = None,
                                 work_dir: Path) -> onnx.ModelProto:
    """Classic dynamic W8A8: int8 per-channel weights, per-tensor dynamic uint8 activations."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(work_dir) / "int8-src.onnx", Path(work_dir) / "int8-dst.onnx"
    large = model.ByteSize() > _PROTO_LIMIT
    onnx.save_model(model, str(src), save_as_external_data=large, location="int8-src.onnx_data")
    quantize_dynamic(src, dst, op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8,
                     nodes_to_exclude=exclude or [], use_external_data_format=large,
                     extra_options={"MatMulConstBOnly": True})
    out = onnx.load(str(dst), load_external_data=True)
    for path in Path(work_dir).glob("int8-*"):
        path.unlink()
    return out


def _tied_heads(model: onnx.ModelProto, table: str) -> list[tuple[onnx.NodeProto, onnx.NodeProto]]:
    """(Transpose, MatMul) pairs computing x @ table^T: the LM head of a tied embedding."""
    transposes = {n.output[0]: n for n in model.graph.node if n.op_type == "Transpose" and n.input[0] == table
                  and list(helper.get_attribute_value(a) for a in n.attribute if a.name == "perm") in ([], [[1, 0]])}
    return [(transposes[n.input[1]], n) for n in model.graph.node
            if n.op_type == "MatMul" and n.input[1] in transposes]


def quantize_embeddings(model: onnx.ModelProto, *, bits: int, block_size: int,
                        accuracy_level: int = 0) -> list[str]:
    """Quantize each constant Gather table (and its tied LM head) in place; returns what it changed."""
    inits = _initializers(model)
    graph = model.graph
    changed: list[str] = []
    for gather in [n for n in graph.node if n.op_type == "Gather" and n.input[0] in inits]:
        table = gather.input[0]
        tensor = inits[table]
        if tensor.data_type != TensorProto.FLOAT or len(tensor.dims) != 2:
            continue
        axis = next((helper.get_attribute_value(a) for a in gather.attribute if a.name == "axis"), 0)
        vocab, hidden = tensor.dims
        if axis != 0 or vocab < 1024 or hidden % block_size:
            continue   # not a token embedding (small lookup tables stay as they are)
        data = numpy_helper.to_array(tensor)
        packed, scales, zero_points = _blockwise(data.T, bits=bits, block_size=block_size)
        names = {k: f"{table}_Q{bits}_{k}" for k in ("packed", "scales", "zp", "shape", "flat")}
        graph.initializer.extend([
            numpy_helper.from_array(packed, names["packed"]),
            numpy_helper.from_array(scales.astype(np.float32), names["scales"]),
            numpy_helper.from_array(zero_points, names["zp"]),
            numpy_helper.from_array(np.asarray([vocab, hidden * bits // 8], dtype=np.int64), names["shape"]),
        ])
        position = list(graph.node).index(gather)
        lookup = [
            helper.make_node("Reshape", [names["packed"], names["shape"]], [names["flat"]],
                             name=f"{gather.name or table}_Q{bits}_Reshape"),
            helper.make_node("GatherBlockQuantized", [names["flat"], gather.input[1], names["scales"], names["zp"]],
                             list(gather.output), name=f"{gather.name or table}_Q{bits}", domain="com.microsoft",
                             bits=bits, block_size=block_size, gather_axis=0, quantize_axis=1),
        ]
        graph.node.remove(gather)
        for offset, node in enumerate(lookup):
            graph.node.insert(position + offset, node)
        changed.append(f"{gather.name or 'Gather'} -> GatherBlockQuantized({bits} bits)")
        for transpose, matmul in _tied_heads(model, table):
            position = list(graph.node).index(matmul)
            attrs = dict(K=hidden, N=vocab, bits=bits, block_size=block_size)
            if accuracy_level:
                attrs["accuracy_level"] = accuracy_level
            head = helper.make_node("MatMulNBits", [matmul.input[0], names["packed"], names["scales"], names["zp"]],
                                    list(matmul.output), name=f"{matmul.name or 'lm_head'}_Q{bits}",
                                    domain="com.microsoft", **attrs)
            graph.node.remove(matmul)
            graph.node.insert(position, head)
            if _consumers(model)[transpose.output[0]] == 0:
                graph.node.remove(transpose)
            changed.append(f"{matmul.name or 'MatMul'} (tied head) -> MatMulNBits({bits} bits, shared)")
        if _consumers(model)[table] == 0:
            graph.initializer.remove(tensor)
    if changed and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return changed


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Counts of the quantized op types (for the job's report)."""
    kinds = ("MatMul", "MatMulNBits", "MatMulInteger", "DynamicQuantizeLinear", "GatherBlockQuantized", "Gather",
             "QuantizeLinear", "DequantizeLinear")
    counts = Counter(n.op_type for n in model.graph.node)
    return {k: counts[k] for k in kinds if counts[k]}
