"""Edits of a TF.js graph model's model.json (a dict) that TF.js's backends need; no TensorFlow here.

    changed = flatten_fused_biases(spec)   # [1, 1, 1, C] fused-convolution biases reshaped to [C], in place
    fused_bias_ranks(spec)                 # {rank: count} of those biases (tests check export's output)

Keras 3's BatchNorm broadcasts its offset as [1, 1, 1, C]; folded into the convolution by tensorflowjs's
converter, that becomes a rank-4 BiasAdd argument, which TF.js's WASM backend rejects ("FusedConv2D only supports
rank-1 bias but got rank 4"). The weight bytes are the same for both shapes, so only model.json changes.
export.py applies it to what it converts, and the page's build (webpage.build) to any model it is given, so a
model converted by hand with `tensorflowjs_converter` loads in the page too.
"""
from __future__ import annotations

FUSED_CONVS = ("_FusedConv2D", "FusedDepthwiseConv2dNative")
# How to get the converter that makes TF.js graph models (export.py's tfjs_* formats); an optional extra.
CONVERTER_INSTALL = "pip install -r requirements-tfjs.txt; Linux, macOS or WSL"


def flatten_fused_biases(spec: dict) -> int:
    """Reshape, in the parsed model.json `spec`, the [1, 1, 1, C] bias weights of fused convolutions to [C].
    Weights that any other node also reads keep their shape. Returns the number of weights reshaped."""
    biases = _sole_reader_biases(spec.get("modelTopology", {}).get("node", []))
    changed = 0
    for group in spec.get("weightsManifest", []):
        for weight in group.get("weights", []):
            shape = weight.get("shape", [])
            if weight["name"] in biases and len(shape) == 4 and shape[:3] == [1, 1, 1]:
                weight["shape"] = [shape[3]]
                changed += 1
    return changed


def fused_bias_ranks(spec: dict) -> dict[int, int]:
    """{rank: count} of the bias argument of every fused convolution (weights only; a bias computed by another
    node counts under -1)."""
    shapes = {w["name"]: w["shape"] for g in spec["weightsManifest"] for w in g["weights"]}
    ranks: dict[int, int] = {}
    for node in spec["modelTopology"]["node"]:
        if node.get("op") in FUSED_CONVS and len(node.get("input", [])) >= 3:
            shape = shapes.get(node["input"][2].split(":")[0])
            rank = len(shape) if shape is not None else -1
            ranks[rank] = ranks.get(rank, 0) + 1
    return ranks


def _sole_reader_biases(nodes: list[dict]) -> set[str]:
    """Names of the fused convolutions' bias inputs that no other node reads."""
    readers: dict[str, int] = {}
    for node in nodes:
        for name in node.get("input", []):
            readers[name.split(":")[0]] = readers.get(name.split(":")[0], 0) + 1
    biases = set()
    for node in nodes:
        if node.get("op") in FUSED_CONVS and len(node.get("input", [])) >= 3:
            name = node["input"][2].split(":")[0]
            if readers.get(name) == 1:
                biases.add(name)
    return biases
