"""What the worker's engine reaches on plain convolutions, for the bench's ceilings: a stack of
3x3 convolutions of one width (a 3 -> C conv, DEPTH C -> C convs each with a per-channel PReLU,
a C -> 3 conv), the layer shapes of Real-ESRGAN's models without anything around it, run by the
same engine and settings as the worker's OpenVINO path (ONNX Runtime's OpenVINO execution
provider from `.venv/openvino`, the CPU device, the precision hint, every CPU thread).

    PYTHONPATH=.venv/openvino python ceiling.py bf16|f32 HEIGHT WIDTH DEPTH C [C ...]

Prints one JSON line per width: the FLOP of its convolutions (multiply-adds x 2) and the seconds
of one inference, the best of five after two warm-ups. Random weights: the engines' kernels do
the same work whatever the numbers are.
"""

import json
import os
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

def stack(channels, depth, height, width):
    rng = np.random.default_rng(channels)
    nodes, weights, flop = [], [], 0
    previous, widths = "input", [3] + [channels] * (depth + 1) + [3]
    for i, (cin, cout) in enumerate(zip(widths, widths[1:])):
        w = (rng.standard_normal((cout, cin, 3, 3)) * (2 / (9 * cin)) ** 0.5).astype(np.float32)
        weights += [numpy_helper.from_array(w, f"w{i}"),
                    numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}")]
        out = "output" if cout == 3 and i > 0 else f"c{i}"
        nodes.append(helper.make_node("Conv", [previous, f"w{i}", f"b{i}"], [out], pads=[1, 1, 1, 1]))
        flop += 2 * cout * cin * 9 * height * width
        previous = out
        if 0 < i <= depth:
            weights.append(numpy_helper.from_array(np.full((cout, 1, 1), 0.2, np.float32), f"s{i}"))
            nodes.append(helper.make_node("PRelu", [out, f"s{i}"], [f"p{i}"]))
            previous = f"p{i}"
    graph = helper.make_graph(
        nodes, f"stack{channels}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, height, width])],
        weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString(), flop


def main():
    precision, height, width, depth = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    config = json.dumps({"CPU": {"INFERENCE_PRECISION_HINT": precision}})
    provider = ("OpenVINOExecutionProvider", {"device_type": "CPU", "num_of_threads": str(os.cpu_count()),
                                              "load_config": config})
    x = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
    for channels in map(int, sys.argv[5:]):
        model, flop = stack(channels, depth, height, width)
        session = ort.InferenceSession(model, providers=[provider])
        if session.get_providers()[0] != "OpenVINOExecutionProvider":
            raise SystemExit("the OpenVINO execution provider did not load")
        for _ in range(2):
            session.run(None, {"input": x})
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            session.run(None, {"input": x})
            best = min(best, time.perf_counter() - started)
        print(json.dumps({"channels": channels, "depth": depth, "flop": flop, "seconds": best}), flush=True)


if __name__ == "__main__":
    main()
