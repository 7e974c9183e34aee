"""Export an official Real-ESRGAN PyTorch checkpoint (`.pth`) to the ONNX the worker loads.

For users who have the original weights (e.g. RealESRGAN_x4plus.pth from the Real-ESRGAN releases):
they are fp32, where the ncnn files `convert.py` reads store fp16. Needs torch and spandrel, which are
not part of `make test`:

    .venv/bin/pip install torch spandrel
    .venv/bin/python infra/models/export_pth.py RealESRGAN_x4plus.pth \
        --name realesrgan-x4plus --out infra/models/out

Checked here on checkpoints saved from spandrel's own modules (the bench's weights): the exported
graph gives the same pixels as the converted one. Uses torch's TorchScript exporter (`dynamo=False`),
which needs no onnxscript.

The graph has the same input and output names ("input", "output": N x 3 x H x W, RGB in [0, 1]),
dynamic spatial axes and the `scale` property, so it replaces the converted file one for one.
"""

import argparse
import pathlib
import sys

import onnx
import torch
from onnx import helper
from spandrel import ModelLoader


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=pathlib.Path)
    parser.add_argument("--name", required=True, help="the model name the worker knows it by")
    parser.add_argument("--out", type=pathlib.Path, required=True)
    args = parser.parse_args()
    descriptor = ModelLoader().load_from_file(str(args.checkpoint))
    model = descriptor.model.eval()
    scale = descriptor.scale
    example = torch.rand(1, 3, 64, 64)
    path = args.out / f"{args.name}.onnx"
    args.out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            model,
            example,
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {2: "height", 3: "width"}, "output": {2: "out_height", 3: "out_width"}},
            opset_version=17,
            dynamo=False,
        )
    exported = onnx.load(str(path))
    helper.set_model_props(exported, {"scale": str(scale), "source": f"{args.checkpoint.name} (PyTorch)"})
    onnx.save(exported, str(path))
    onnx.checker.check_model(str(path))
    print(f"{path}: x{scale}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
