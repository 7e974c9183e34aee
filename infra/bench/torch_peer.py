"""The PyTorch peer for `make bench`: Real-ESRGAN's own architectures (spandrel's RRDBNet and
SRVGGNetCompact) loaded with the same weights the worker runs (read back from the converted ONNX
file, so both sides compute with identical numbers), on the CPU, fp32 or bf16 autocast (AMX).

    python torch_peer.py MODEL.onnx INPUT.png OUTPUT.png fp32|bf16

The input is mirrored by 10 px at its edges first and the output cropped back, as the worker (and
ncnn) do, so the two outputs are comparable to the edge.

Prints one JSON line: run seconds (after a warm-up pass on a small input) and threads.
"""

import json
import os
import sys
import time

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from PIL import Image
from spandrel.architectures.Compact.__arch.SRVGG import SRVGGNetCompact
from spandrel.architectures.ESRGAN.__arch.RRDB import RRDBNet


def load(path):
    graph = onnx.load(path).graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    # Learned parameters in graph order: each Conv's weight and bias, each PRelu's slope. A dense
    # block's conv that the converter wrote as convs on the parts of its input (`<conv>.partK`,
    # summed by `<conv>.sum`; the first part carries the bias) is put back together.
    params, parts = [], []
    for node in graph.node:
        if node.op_type == "Conv" and ".part" in node.name:
            parts.append(node)
        elif node.op_type == "Conv":
            params += [weights[node.input[1]], weights[node.input[2]]]
        elif node.op_type == "Sum" and parts and node.name == parts[0].name.rsplit(".part", 1)[0] + ".sum":
            params += [np.concatenate([weights[p.input[1]] for p in parts], axis=1), weights[parts[0].input[2]]]
            parts = []
        elif node.op_type == "PRelu":
            params.append(weights[node.input[1]].reshape(-1))
    assert not parts, f"{parts[0].name}: parts without their sum"
    compact = any(n.op_type == "PRelu" for n in graph.node)
    if compact:
        num_conv = sum(n.op_type == "Conv" for n in graph.node) - 2
        model = SRVGGNetCompact(num_conv=num_conv, upscale=4, act_type="prelu")
    else:
        model = RRDBNet(num_blocks=23, scale=4)
    state = model.state_dict()
    assert len(state) == len(params), (len(state), len(params))
    for (name, tensor), value in zip(state.items(), params):
        assert tuple(tensor.shape) == value.shape, (name, tensor.shape, value.shape)
        state[name] = torch.from_numpy(value.copy())
    model.load_state_dict(state)
    return model.eval()


def main():
    model_path, source, target, mode = sys.argv[1:5]
    torch.set_num_threads(os.cpu_count())
    model = load(model_path)
    image = np.asarray(Image.open(source).convert("RGB"), dtype=np.float32) / 255.0
    pad = 10
    image = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    x = torch.from_numpy(image.transpose(2, 0, 1).copy())[None]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=(mode == "bf16"))
    with torch.inference_mode(), autocast:
        model(x[:, :, :32, :32])  # warm-up: kernels chosen, weights packed
        started = time.perf_counter()
        y = model(x)
        seconds = time.perf_counter() - started
    s = y.shape[-1] // x.shape[-1]
    y = y[:, :, pad * s : y.shape[2] - pad * s, pad * s : y.shape[3] - pad * s]
    out = (y.float().clamp(0, 1)[0].numpy().transpose(1, 2, 0) * 255.0).round().astype(np.uint8)
    Image.fromarray(out).save(target)
    print(json.dumps({"run_seconds": seconds, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
