"""The trained head as ONNX: one Gemm and one Softmax on the embedding (as wide as the backbone's)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from shopvision.categories.training import TrainedHead
from shopvision.contract import CATEGORISED_EMBEDDING, CATEGORY_PROBABILITIES, EMBEDDING

OPSET = 15
"""Shape's ``end`` attribute needs 15; ONNX Runtime 1.19 (Triton 24.10's onnxruntime backend, on GPU nodes) runs up
to 21."""


def head_to_onnx(head: TrainedHead) -> onnx.ModelProto:
    """``category_probabilities = softmax(embedding @ weights.T + bias)``, batch and width dynamic, and the
    embedding itself as ``categorised_embedding`` (the ensemble's embedding passes through the head).

    The Reshape to (batch, -1) changes nothing but hides the number of categories from shape inference:
    Triton's onnxruntime backend refuses a config whose ``dims: [-1]`` meets a fixed model dimension, and one
    config must fit heads of any width (two versions are loaded side by side while a promotion checks the
    new one). The category names travel in the model's metadata too (and in ``categories.txt``).
    """
    width = int(head.weights.shape[1])
    graph = helper.make_graph(
        [helper.make_node("Gemm", [EMBEDDING, "weights", "bias"], ["logits"], transB=1),
         helper.make_node("Shape", [EMBEDDING], ["batch"], end=1),
         helper.make_node("Concat", ["batch", "any_width"], ["batch_by_any"], axis=0),
         helper.make_node("Reshape", ["logits", "batch_by_any"], ["logits_any_width"]),
         helper.make_node("Softmax", ["logits_any_width"], [CATEGORY_PROBABILITIES], axis=1),
         helper.make_node("Identity", [EMBEDDING], [CATEGORISED_EMBEDDING])],
        "categories_head",
        [helper.make_tensor_value_info(EMBEDDING, TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info(CATEGORY_PROBABILITIES, TensorProto.FLOAT, ["batch", "categories"]),
         helper.make_tensor_value_info(CATEGORISED_EMBEDDING, TensorProto.FLOAT, ["batch", width])],
        initializer=[numpy_helper.from_array(head.weights, "weights"), numpy_helper.from_array(head.bias, "bias"),
                     numpy_helper.from_array(np.array([-1], dtype=np.int64), "any_width")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="shopvision")
    # ONNX Runtime 1.19 (Triton 24.10's onnxruntime backend, on GPU nodes) reads IR version 10 at most.
    model.ir_version = 8
    helper.set_model_props(model, {"categories": "\n".join(head.categories)})
    onnx.checker.check_model(model)
    return model
