"""The exact torchvision ResNet50 v1.5 architecture as ONNX, with seeded random weights.

For offline use and tests only: the weights are not trained, so classes and embeddings
mean nothing. Same seed, same bytes (and so the same sha256).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from shopvision.contract import CROP_SIZE, NUM_CLASSES, RESNET50_EMBEDDING_DIM

OPSET = 17
INPUT_NAME = "input"
LOGITS_NAME = "logits"
_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (width, blocks, stride)
_EXPANSION = 4
_BN_EPSILON = 1e-5
# Keeps untrained logits in a range where softmax is not one-hot, so top-k orderings are
# stable and comparable between pipelines.
_LOGIT_SCALE = 0.5


class _GraphBuilder:
    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.trainable_parameters = 0

    def _weight(self, name: str, values: np.ndarray, *, trainable: bool) -> str:
        self.initializers.append(numpy_helper.from_array(values.astype(np.float32), name))
        if trainable:
            self.trainable_parameters += values.size
        return name

    def conv_bn(self, name: str, x: str, c_in: int, c_out: int, kernel: int, stride: int, *, relu: bool,
                gamma: float = 1.0) -> str:
        # Kaiming-normal (fan_out), as torchvision initialises ResNet convolutions.
        std = np.sqrt(2.0 / (c_out * kernel * kernel))
        weight = self._rng.normal(0.0, std, size=(c_out, c_in, kernel, kernel))
        w = self._weight(f"{name}.weight", weight, trainable=True)
        pad = kernel // 2
        conv_out = f"{name}.conv"
        self.nodes.append(helper.make_node(
            "Conv", [x, w], [conv_out], name=name, kernel_shape=[kernel, kernel],
            strides=[stride, stride], pads=[pad] * 4,
        ))
        scale = self._weight(f"{name}.bn.weight", np.full(c_out, gamma), trainable=True)
        bias = self._weight(f"{name}.bn.bias", np.zeros(c_out), trainable=True)
        mean = self._weight(f"{name}.bn.running_mean", np.zeros(c_out), trainable=False)
        var = self._weight(f"{name}.bn.running_var", np.ones(c_out), trainable=False)
        bn_out = f"{name}.bn"
        self.nodes.append(helper.make_node(
            "BatchNormalization", [conv_out, scale, bias, mean, var], [bn_out],
            name=f"{name}.bn", epsilon=_BN_EPSILON,
        ))
        return self.relu(bn_out) if relu else bn_out

    def relu(self, x: str) -> str:
        self.nodes.append(helper.make_node("Relu", [x], [f"{x}.relu"]))
        return f"{x}.relu"

    def bottleneck(self, name: str, x: str, c_in: int, width: int, stride: int) -> str:
        c_out = width * _EXPANSION
        y = self.conv_bn(f"{name}.conv1", x, c_in, width, 1, 1, relu=True)
        # v1.5: the stride sits on the 3x3 convolution, not the first 1x1.
        y = self.conv_bn(f"{name}.conv2", y, width, width, 3, stride, relu=True)
        # A small last-BN scale keeps the residual stream's variance from doubling per block.
        y = self.conv_bn(f"{name}.conv3", y, width, c_out, 1, 1, relu=False, gamma=0.2)
        shortcut = x
        if stride != 1 or c_in != c_out:
            shortcut = self.conv_bn(f"{name}.downsample", x, c_in, c_out, 1, stride, relu=False)
        self.nodes.append(helper.make_node("Add", [y, shortcut], [f"{name}.add"]))
        return self.relu(f"{name}.add")


def build_synthetic_resnet50(*, seed: int = 0) -> onnx.ModelProto:
    """ResNet50 v1.5 (25,557,032 trainable parameters) with logits as its only output."""
    builder = _GraphBuilder(np.random.default_rng(seed))
    x = builder.conv_bn("conv1", INPUT_NAME, 3, 64, 7, 2, relu=True)
    builder.nodes.append(helper.make_node(
        "MaxPool", [x], ["maxpool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]
    ))
    x, channels = "maxpool", 64
    for stage, (width, blocks, stride) in enumerate(_STAGES, start=1):
        for block in range(blocks):
            x = builder.bottleneck(f"layer{stage}.{block}", x, channels, width, stride if block == 0 else 1)
            channels = width * _EXPANSION
    builder.nodes.append(helper.make_node("GlobalAveragePool", [x], ["avgpool"]))
    builder.nodes.append(helper.make_node("Flatten", ["avgpool"], ["features"], axis=1))
    bound = 1.0 / np.sqrt(RESNET50_EMBEDDING_DIM)
    fc_weight = builder._rng.uniform(-bound, bound, size=(NUM_CLASSES, RESNET50_EMBEDDING_DIM)) * _LOGIT_SCALE / bound
    fc_bias = builder._rng.uniform(-bound, bound, size=NUM_CLASSES) * _LOGIT_SCALE
    w = builder._weight("fc.weight", fc_weight, trainable=True)
    b = builder._weight("fc.bias", fc_bias, trainable=True)
    builder.nodes.append(helper.make_node("Gemm", ["features", w, b], [LOGITS_NAME], name="fc", transB=1))

    graph = helper.make_graph(
        builder.nodes,
        "resnet50_v1_5_synthetic",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, CROP_SIZE, CROP_SIZE])],
        [helper.make_tensor_value_info(LOGITS_NAME, TensorProto.FLOAT, ["batch", NUM_CLASSES])],
        builder.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="shopvision")
    model.ir_version = 8
    helper.set_model_props(model, {"synthetic": "true", "seed": str(seed),
                                   "trainable_parameters": str(builder.trainable_parameters)})
    return model
