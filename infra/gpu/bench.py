"""The GPU path, measured (#17): ONNX Runtime's CUDA execution provider on the converted
Real-ESRGAN models, fp32 and fp16, beside PyTorch (spandrel's architectures, the same weights read
back from the ONNX files) in fp32 and fp16 on the same GPU; seconds per input megapixel and PSNR
against PyTorch fp32. Lambent's `cuda` build runs the same ONNX Runtime provider on the same graphs.

    python infra/gpu/bench.py [--models infra/models/out] [--side 512] [--device cuda|cpu] [--runs 5]

`--device cpu` runs the same code on the CPU (fp32 only, a small input): a check of the script on a
machine without a GPU. Run by infra/gpu/bench.sh."""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "bench"))


def test_image(side):
    """A deterministic photo-like image: smooth gradients, edges and fine noise."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    rng = np.random.default_rng(20261205)
    image = np.stack([
        0.5 + 0.4 * np.sin(6 * x + 2 * y),
        0.5 + 0.4 * np.cos(5 * y - 3 * x),
        0.5 + 0.3 * np.sin(9 * x * y),
    ], axis=-1)
    image[(x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.05] *= 0.4
    image += rng.normal(0, 0.02, image.shape).astype(np.float32)
    return np.clip(image, 0, 1).astype(np.float32)


def psnr(a, b):
    a = np.clip(np.round(a * 255), 0, 255)
    b = np.clip(np.round(b * 255), 0, 255)
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def timed(runs, work):
    work()  # warm-up: kernels chosen, memory allocated
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        out = work()
        samples.append(time.perf_counter() - started)
    return sorted(samples)[len(samples) // 2], out


def onnx_runs(path, x, device, runs):
    import onnx
    import onnxruntime as ort

    providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    rows = []
    variants = [("fp32", onnx.load(str(path)))]
    if device == "cuda":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        variants.append(("fp16", convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)))
    for precision, model in variants:
        session = ort.InferenceSession(model.SerializeToString(), providers=providers)
        if device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
            raise RuntimeError("ONNX Runtime has no CUDA provider here: install onnxruntime-gpu")
        name = session.get_inputs()[0].name
        seconds, out = timed(runs, lambda: session.run(None, {name: x})[0])
        rows.append((f"ONNX Runtime {device.upper()} EP {precision} (Lambent's `{device}` provider)", seconds, out))
    return rows


def torch_runs(path, x, device, runs):
    import torch
    from torch_peer import load

    model = load(str(path)).to(device)
    rows = []
    modes = [("fp32", torch.float32)] + ([("fp16", torch.float16)] if device == "cuda" else [])
    for precision, dtype in modes:
        net = model.to(dtype)
        tensor = torch.from_numpy(x).to(device, dtype)

        def run():
            with torch.inference_mode():
                y = net(tensor)
                if device == "cuda":
                    torch.cuda.synchronize()
                return y.float().cpu().numpy()

        seconds, out = timed(runs, run)
        rows.append((f"PyTorch {precision} (spandrel)", seconds, out))
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=str(HERE.parent / "models" / "out"))
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    side = args.side if args.device == "cuda" else min(args.side, 64)
    image = test_image(side)
    x = np.ascontiguousarray(image.transpose(2, 0, 1)[None])
    megapixels = side * side / 1e6
    gpu = "the CPU"
    if args.device == "cuda":
        import torch

        gpu = torch.cuda.get_device_name(0)
    print(f"GPU path, {side}x{side} x4 on {gpu} ({platform.node()}); median of {args.runs} runs after a warm-up.")
    print()
    print("| model | engine | s/MP | PSNR vs PyTorch fp32 | vs PyTorch fp32 |")
    print("|---|---|---:|---:|---:|")
    results = {}
    for model in ("realesrgan-x4plus", "realesr-animevideov3-x4"):
        path = Path(args.models) / f"{model}.onnx"
        rows = torch_runs(path, x, args.device, args.runs) + onnx_runs(path, x, args.device, args.runs)
        reference_seconds, reference = rows[0][1], rows[0][2]
        for name, seconds, out in rows:
            print(f"| {model} | {name} | {seconds / megapixels:.3f} | {psnr(out, reference):.1f} dB | "
                  f"{reference_seconds / seconds:.2f}x |")
            results.setdefault(model, {})[name] = {"s_per_mp": seconds / megapixels,
                                                   "psnr_db": psnr(out, reference)}
    print()
    print(json.dumps({"side": side, "device": gpu, "results": results}))


if __name__ == "__main__":
    main()
