"""Turn any ImageNet-style ONNX classifier into the graph the repository serves.

Input ``pixel_values`` [batch, 3, 224, 224]; outputs ``probabilities`` (softmax over the 1000 ImageNet
classes) and ``embedding`` (the global-average-pool output, dequantized where the graph is quantised,
L2-normalised), as wide as the backbone makes it: 2048 for ResNet50, 1280 for MobileNet v2. Works on the
ONNX Model Zoo exports (ResNet50 v1 input ``data``, MobileNet v2 input ``input``), torchvision and timm
exports, quantised graphs (QDQ or QOperator) and our synthetic model.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from shopvision.contract import CROP_SIZE, EMBEDDING, NUM_CLASSES, PIXELS, PROBABILITIES
from shopvision.errors import ModelBuildError

BATCH_DIM = "batch"
_POOLS = frozenset({"GlobalAveragePool", "QLinearGlobalAveragePool", "ReduceMean", "AveragePool",
                    "QLinearAveragePool"})
# Ops that compute over space: reaching one on the way up from the logits means the pool was passed (or the
# head is convolutional), so inspection stops and asks for --embedding-node.
_SPATIAL = frozenset({"Conv", "QLinearConv", "ConvInteger", "MaxPool"})
# Where each quantised op keeps its output's scale and zero point, to dequantize a tensor it made.
_OUTPUT_QUANTIZATION = {"QLinearGlobalAveragePool": (3, 4), "QLinearAveragePool": (3, 4), "QLinearConv": (6, 7),
                        "QLinearMatMul": (6, 7), "QLinearAdd": (6, 7), "QLinearMul": (6, 7), "QuantizeLinear": (1, 2)}
# Ops that only move a quantised tensor's values around, so it keeps its producer's scale and zero point.
_KEEPS_QUANTIZATION = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose"})
_INSPECTION_DEPTH = 32
_L2_EPSILON = 1e-12


class SurgeryError(ModelBuildError):
    """The graph does not look like a single-input ImageNet classifier."""


def canonicalize(model: onnx.ModelProto, *, embedding_node: str | None = None) -> onnx.ModelProto:
    """A checked copy of ``model`` with the serving contract's input and outputs.

    ``embedding_node`` names the node (or the tensor) whose output is the embedding, for graphs where
    inspection cannot find the global-average pool above the classifier.
    """
    model = _copy(model)
    graph = model.graph
    opset = _default_opset(model)

    image_input = _single_image_input(graph)
    fixed_batch = _batch_size_if_fixed(image_input)
    _rename_tensor(graph, image_input.name, PIXELS)
    _make_batch_dynamic(image_input)
    if fixed_batch is not None:
        _free_hardcoded_batch_in_reshapes(graph, fixed_batch)

    logits = _logits_tensor(graph)
    pooled = _named_tensor(graph, embedding_node) if embedding_node else _pooled_tensor(graph, logits)
    features = _flattened(graph, _dequantized(graph, pooled))

    probabilities = helper.make_node("Softmax", [logits], [PROBABILITIES], name="shopvision_softmax", axis=1)
    graph.node.append(probabilities)
    graph.node.extend(_l2_normalise_nodes(graph, features, opset))

    del graph.output[:]
    graph.output.extend([
        helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, [BATCH_DIM, NUM_CLASSES]),
        helper.make_tensor_value_info(EMBEDDING, TensorProto.FLOAT, [BATCH_DIM, "embedding_width"]),
    ])
    # Shapes recorded for the old fixed batch would contradict the dynamic one.
    del graph.value_info[:]
    _prune_unused_nodes(graph)
    # Shape inference cannot see through the contrib ops of quantised graphs (QLinearGlobalAveragePool), so the
    # width is what the graph computes on one image.
    width = _computed_width(model)
    graph.output[1].type.tensor_type.shape.dim[1].Clear()
    graph.output[1].type.tensor_type.shape.dim[1].dim_value = width

    inferred = shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(inferred, full_check=True)
    _check_output_shapes(inferred, width)
    return inferred


def embedding_width(model: onnx.ModelProto) -> int:
    """The width of a canonical model's ``embedding`` output: what every config and catalog must agree on."""
    for output in model.graph.output:
        if output.name == EMBEDDING:
            dim = output.type.tensor_type.shape.dim[-1]
            if dim.HasField("dim_value"):
                return int(dim.dim_value)
    raise SurgeryError(f"the model has no fixed-width '{EMBEDDING}' output; build it with `shopvision model build`")


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copied = onnx.ModelProto()
    copied.CopyFrom(model)
    return copied


def _default_opset(model: onnx.ModelProto) -> int:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return opset.version
    raise SurgeryError("the model imports no default-domain opset")


def _single_image_input(graph: onnx.GraphProto) -> onnx.ValueInfoProto:
    initializer_names = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializer_names]
    if len(inputs) != 1:
        raise SurgeryError(f"expected one image input, found {[value.name for value in inputs]}")
    image = inputs[0]
    dims = image.type.tensor_type.shape.dim
    if len(dims) != 4 or (dims[1].HasField("dim_value") and dims[1].dim_value != 3):
        shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]
        raise SurgeryError(f"expected an NCHW input with 3 channels, '{image.name}' has shape {shape}")
    if image.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise SurgeryError(f"expected a float32 input, '{image.name}' is {image.type.tensor_type.elem_type}")
    return image


def _batch_size_if_fixed(image_input: onnx.ValueInfoProto) -> int | None:
    batch = image_input.type.tensor_type.shape.dim[0]
    return batch.dim_value if batch.HasField("dim_value") else None


def _make_batch_dynamic(image_input: onnx.ValueInfoProto) -> None:
    batch = image_input.type.tensor_type.shape.dim[0]
    batch.Clear()
    batch.dim_param = BATCH_DIM


def _rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    if old == new:
        return
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name == old:
            value.name = new


def _free_hardcoded_batch_in_reshapes(graph: onnx.GraphProto, fixed_batch: int) -> None:
    """Older exports flatten with Reshape(x, [1, -1]); 0 copies the incoming batch instead."""
    initializers = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] not in initializers:
            continue
        shape_init = initializers[node.input[1]]
        shape = numpy_helper.to_array(shape_init).copy()
        if shape.ndim == 1 and len(shape) >= 2 and shape[0] == fixed_batch and -1 in shape[1:]:
            shape[0] = 0
            shape_init.CopyFrom(numpy_helper.from_array(shape, shape_init.name))


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in graph.node for output in node.output}


def _logits_tensor(graph: onnx.GraphProto) -> str:
    """The pre-softmax class scores: the classifier output, minus any softmax already there."""
    candidates = [out.name for out in graph.output if _last_dim(out) in (NUM_CLASSES, None)]
    if len(candidates) != 1:
        raise SurgeryError(
            f"expected one output with {NUM_CLASSES} classes, outputs are {[out.name for out in graph.output]}"
        )
    producer = _producers(graph).get(candidates[0])
    if producer is not None and producer.op_type in ("Softmax", "LogSoftmax"):
        return producer.input[0]
    return candidates[0]


def _last_dim(value: onnx.ValueInfoProto) -> int | None:
    dims = value.type.tensor_type.shape.dim
    return dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else None


def _pooled_tensor(graph: onnx.GraphProto, logits: str) -> str:
    """The global-average pool's output above the logits: the features the classifier reads."""
    producers = _producers(graph)
    node = producers.get(logits)
    for _ in range(_INSPECTION_DEPTH):
        if node is None or node.op_type in _SPATIAL:
            break
        if node.op_type in _POOLS:
            return node.output[0]
        node = producers.get(node.input[0])
    reached = "the graph's input" if node is None else f"'{node.op_type}' ({node.name or node.output[0]})"
    raise SurgeryError(f"cannot find the global-average pool above the logits: reached {reached} first; "
                       "name the node whose output is the embedding with --embedding-node")


def _named_tensor(graph: onnx.GraphProto, name: str) -> str:
    """The output of the node called ``name``, or the tensor called ``name``."""
    for node in graph.node:
        if node.name == name:
            return node.output[0]
    if name in _producers(graph):
        return name
    raise SurgeryError(f"--embedding-node {name}: no node or tensor has that name")


def _dequantized(graph: onnx.GraphProto, tensor: str) -> str:
    """``tensor`` as float: unchanged when it is float, else through DequantizeLinear with its producer's scale."""
    producers = _producers(graph)
    node = producers.get(tensor)
    while node is not None and node.op_type in _KEEPS_QUANTIZATION:
        node = producers.get(node.input[0])
    if node is None or node.op_type not in _OUTPUT_QUANTIZATION:
        return tensor
    if node.op_type == "QuantizeLinear" and producers.get(tensor) is node:
        return node.input[0]  # QDQ graphs: the float tensor before its quantize/dequantize round trip
    scale, zero_point = (node.input[i] for i in _OUTPUT_QUANTIZATION[node.op_type])
    dequantized = f"{tensor}_dequantized"
    graph.node.append(helper.make_node("DequantizeLinear", [tensor, scale, zero_point], [dequantized],
                                       name="shopvision_dequantize_embedding"))
    return dequantized


def _flattened(graph: onnx.GraphProto, features: str) -> str:
    flattened = f"{features}_flat"
    # Global pools give [batch, C, 1, 1]; Flatten makes it [batch, C] (and leaves [batch, C] alone).
    graph.node.append(helper.make_node("Flatten", [features], [flattened], name="shopvision_flatten", axis=1))
    return flattened


def _computed_width(model: onnx.ModelProto) -> int:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    image = np.zeros((1, 3, CROP_SIZE, CROP_SIZE), dtype=np.float32)
    (embedding,) = session.run([EMBEDDING], {PIXELS: image})
    if embedding.ndim != 2 or embedding.shape[0] != 1:
        raise SurgeryError(f"the embedding of one image has shape {list(embedding.shape)}, expected [1, width]: "
                           "--embedding-node must name a pooled feature map")
    return int(embedding.shape[1])


def _l2_normalise_nodes(graph: onnx.GraphProto, features: str, opset: int) -> list[onnx.NodeProto]:
    epsilon = "shopvision_l2_epsilon"
    graph.initializer.append(numpy_helper.from_array(np.array(_L2_EPSILON, dtype=np.float32), epsilon))
    norm = "shopvision_l2_norm"
    if opset >= 18:
        axes = "shopvision_l2_axes"
        graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), axes))
        reduce = helper.make_node("ReduceL2", [features, axes], [norm], name="shopvision_l2", keepdims=1)
    else:
        reduce = helper.make_node("ReduceL2", [features], [norm], name="shopvision_l2", axes=[1], keepdims=1)
    # The epsilon keeps an all-zero feature vector at zero instead of NaN.
    safe_norm = helper.make_node("Max", [norm, epsilon], [f"{norm}_safe"], name="shopvision_l2_floor")
    divide = helper.make_node("Div", [features, f"{norm}_safe"], [EMBEDDING], name="shopvision_l2_divide")
    return [reduce, safe_norm, divide]


def _prune_unused_nodes(graph: onnx.GraphProto) -> None:
    needed = {output.name for output in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(output in needed for output in node.output):
            kept.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    initializers = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def _check_output_shapes(model: onnx.ModelProto, width: int) -> None:
    shapes = {
        out.name: [d.dim_value if d.HasField("dim_value") else d.dim_param for d in out.type.tensor_type.shape.dim]
        for out in model.graph.output
    }
    expected = {PROBABILITIES: [BATCH_DIM, NUM_CLASSES], EMBEDDING: [BATCH_DIM, width]}
    if shapes != expected:
        raise SurgeryError(f"outputs after surgery are {shapes}, expected {expected}")
