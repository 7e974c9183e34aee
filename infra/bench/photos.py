"""Photos: upscaling and best-cut beside their peers (make bench), on the same weights and the same photos.

Upscaling, seconds per input megapixel (x4 output), peak RSS and PSNR against PyTorch fp32:
- PyTorch: Real-ESRGAN's own architectures from spandrel, fp32 and bf16 autocast (AMX), every
  CPU thread (infra/bench/torch_peer.py), each run in its own process.
- Lambent: the worker's path (`lambent-upscale`, release build): ONNX Runtime's CPU kernels in
  fp32 (exact) and the OpenVINO execution provider in bf16 (the fast path), tiles of 256 px.
Then Lambent's peak memory as the input grows (256², 512², 1024²).

Best-cut: OpenCV (cvtColor + Laplacian(CV_64F) + var) vs `lambent-bestcut`, both timed on decoded
pixels only.

The photos are real ones shipped inside scikit-image's wheel (chelsea, retina), fetched from PyPI.
"""

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".local" / "bench"
PEERS = ROOT / ".venv" / "peers" / "bin" / "python"
UPSCALE = ROOT / "target" / "release" / "lambent-upscale"
BESTCUT = ROOT / "target" / "release" / "lambent-bestcut"
MODELS = ROOT / "infra" / "models" / "out"


def photos():
    """chelsea.png and retina.jpg from the scikit-image wheel (real photographs, on PyPI)."""
    wanted = {"chelsea.png", "retina.jpg"}
    if all((WORK / name).exists() for name in wanted):
        return
    WORK.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "scikit-image==0.26.0", "-d", str(WORK)],
        check=True,
    )
    wheel = next(WORK.glob("scikit_image-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        for name in wanted:
            (WORK / name).write_bytes(archive.read(f"skimage/data/{name}"))


def crop(source, side, name):
    image = Image.open(WORK / source).convert("RGB")
    left = (image.width - side) // 2
    top = (image.height - side) // 2
    path = WORK / name
    image.crop((left, top, left + side, top + side)).save(path)
    return path


def run(command):
    """Runs a command in its own process; returns its JSON line and its peak RSS in MB."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise RuntimeError(f"{command[0]} failed ({status}): {out}")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def psnr(a, b):
    x = np.asarray(Image.open(a).convert("RGB"), dtype=np.float64)
    y = np.asarray(Image.open(b).convert("RGB"), dtype=np.float64)
    mse = ((x - y) ** 2).mean()
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def upscaling():
    side = 256
    source = crop("chelsea.png", side, f"chelsea-{side}.png")
    megapixels = side * side / 1e6
    print(f"Upscaling x4, a {side}x{side} crop of a real photo (chelsea); seconds per input megapixel, peak RSS of the")
    print("process, PSNR against PyTorch fp32 (same weights; the input mirrored 10 px at its edges on both sides).")
    print()
    print("| model | engine | s/MP | peak RSS MB | PSNR vs PyTorch fp32 | vs PyTorch bf16 |")
    print("|---|---|---:|---:|---:|---:|")
    for model in ("realesrgan-x4plus", "realesr-animevideov3-x4"):
        onnx_path = MODELS / f"{model}.onnx"
        rows = []
        reference = WORK / f"{model}-torch-fp32.png"
        for mode in ("fp32", "bf16"):
            out = WORK / f"{model}-torch-{mode}.png"
            result, rss = run([str(PEERS), str(ROOT / "infra/bench/torch_peer.py"), str(onnx_path), str(source), str(out), mode])
            name = "PyTorch fp32" if mode == "fp32" else "PyTorch bf16 autocast (AMX)"
            rows.append((name, result["run_seconds"] / megapixels, rss, out))
        for provider, name in (("cpu", "Lambent, ONNX Runtime fp32 (exact)"), ("openvino", "Lambent, OpenVINO EP bf16")):
            out = WORK / f"{model}-lambent-{provider}.png"
            result, rss = run([str(UPSCALE), model, str(source), str(out), "--provider", provider, "--repeat", "2"])
            rows.append((name, result["run_seconds"] / megapixels, rss, out))
        best_torch = rows[1][1]
        for name, spmp, rss, out in rows:
            print(f"| {model} | {name} | {spmp:.1f} | {rss:.0f} | {psnr(out, reference):.1f} dB | {best_torch / spmp:.2f}x |")
    print()
    print("Lambent's peak memory as the input grows (OpenVINO bf16, realesrgan-x4plus, 256 px tiles; crops of retina.jpg):")
    print()
    print("| input | s/MP | peak RSS MB | of which the x4 output image MB |")
    print("|---|---:|---:|---:|")
    for side in (256, 512, 1024):
        source = crop("retina.jpg", side, f"retina-{side}.png")
        out = WORK / f"retina-{side}-x4.png"
        result, rss = run([str(UPSCALE), "realesrgan-x4plus", str(source), str(out), "--provider", "openvino"])
        output_mb = (4 * side) ** 2 * 3 / 1e6
        print(f"| {side}x{side} | {result['run_seconds'] / (side * side / 1e6):.1f} | {rss:.0f} | {output_mb:.0f} |")
    print()


OPENCV_PEER = """
import json, sys, time
import cv2
cv2.setNumThreads(int(sys.argv[1]))
images = [cv2.imread(p) for p in sys.argv[2:]]
best = float("inf")
for _ in range(5):
    started = time.perf_counter()
    scores = [cv2.Laplacian(cv2.cvtColor(i, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var() for i in images]
    best = min(best, time.perf_counter() - started)
print(json.dumps({"seconds": best, "scores": scores}))
"""


def best_cut():
    """A 12 MP photo (retina.jpg resized to 4000x3000, as a phone takes) and two blurrier copies."""
    from PIL import ImageFilter

    base = Image.open(WORK / "retina.jpg").convert("RGB").resize((4000, 3000), Image.LANCZOS)
    paths = []
    for i, radius in enumerate((0, 1.5, 3)):
        path = WORK / f"bestcut-{i}.png"
        (base.filter(ImageFilter.GaussianBlur(radius)) if radius else base).save(path)
        paths.append(str(path))
    megapixels = 3 * 12.0
    threads = os.cpu_count()
    opencv, _ = run([sys.executable, "-c", OPENCV_PEER, str(threads), *paths])
    ours, _ = run([str(BESTCUT), "--repeat", "5", *paths])
    worst = max(abs(a - b) / b for a, b in zip(ours["scores"], opencv["scores"]))
    same_winner = np.argmax(ours["scores"]) == np.argmax(opencv["scores"])
    print(f"Best-cut sharpness on decoded pixels: three 4000x3000 photos, {threads} threads, fastest of 5 passes.")
    print()
    print("| engine | MP/s | vs OpenCV |")
    print("|---|---:|---:|")
    base_rate = megapixels / opencv["seconds"]
    for name, result in (("OpenCV 4.12 cvtColor + Laplacian(CV_64F) + var", opencv), ("Lambent bestcut::sharpness", ours)):
        rate = megapixels / result["seconds"]
        print(f"| {name} | {rate:.0f} | {rate / base_rate:.2f}x |")
    print()
    print(f"Scores: largest relative difference {worst:.1e}; same winner: {'yes' if same_winner else 'NO'}.")
    print()


def main():
    for need in (PEERS, UPSCALE, BESTCUT):
        if not need.exists():
            sys.exit(f"{need} is missing: run `make bench`")
    photos()
    best_cut()
    upscaling()


if __name__ == "__main__":
    main()
