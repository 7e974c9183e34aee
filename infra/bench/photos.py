"""Photos: upscaling and best-cut beside their peers (make bench), on the same weights and the same photos.

Upscaling, seconds per input megapixel (x4 output), the compute rate and its fraction of this CPU's
peak for the precision used (infra/bench/cpu.py), peak RSS and PSNR against PyTorch fp32:
- PyTorch: Real-ESRGAN's own architectures from spandrel, fp32, and bf16 autocast only where the
  CPU computes bf16 (AMX or AVX-512 BF16; elsewhere it is emulated and slower than fp32), every
  CPU thread (infra/bench/torch_peer.py), each run in its own process.
- Lambent: the worker's path (`lambent-upscale`, release build): ONNX Runtime's CPU kernels in
  fp32 (exact) and the OpenVINO execution provider (bf16 where the CPU computes it, fp32
  elsewhere: the label says which), in the worker's tiles (512 px on its FMA engine, 256 elsewhere;
  the tables say which); and the worker's own mode where it differs:
  Lambent's engine (shared/amx) on AMX in bf16, or in fp32 on FMA (Winograd's F(4x4, 3x3)) where
  the CPU computes no bf16.
- Lambent's OpenVINO path in fp32 too where the CPU computes bf16: not the worker's choice there,
  but the same engine measured against the fp32 peak.
Each peer runs under a time limit (BENCH_PEER_TIMEOUT, default 900 s): one that passes it is
reported as such and the bench goes on.
Then the ceilings (what the precision's unit sustains alone, `units.c`, and what the worker's
engine reaches on plain stacks of 3x3 convolutions of one width, `ceiling.py`), the seams of
tiling, and Lambent's peak memory as the input grows (256² to 2048²).

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

from cpu import Cpu, conv_flops_per_input_pixel, measured_ghz, measured_unit_gflops

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".local" / "bench"
PEERS = ROOT / ".venv" / "peers" / "bin" / "python"
UPSCALE = ROOT / "target" / "release" / "lambent-upscale"
BESTCUT = ROOT / "target" / "release" / "lambent-bestcut"
MODELS = ROOT / "infra" / "models" / "out"
PEER_TIMEOUT = int(os.environ.get("BENCH_PEER_TIMEOUT", "900"))
# The convolutions in each stack of `ceilings` (infra/bench/ceiling.py).
CEILING_DEPTH = 16
# The pixels mirrored at an image's edges before the model (the worker's upscale::EDGE_PAD).
EDGE_PAD = 10


class TimedOut(Exception):
    pass


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
    """The centre `side` x `side` of a photo, enlarged first (Lanczos) when the photo is smaller."""
    image = Image.open(WORK / source).convert("RGB")
    if min(image.size) < side:
        factor = side / min(image.size)
        image = image.resize((round(image.width * factor), round(image.height * factor)), Image.LANCZOS)
    left = (image.width - side) // 2
    top = (image.height - side) // 2
    path = WORK / name
    image.crop((left, top, left + side, top + side)).save(path)
    return path


def run(command, timeout=None, env=None):
    """Runs a command in its own process (with `env` added to this one's environment); returns
    its JSON line and its peak RSS in MB. Past `timeout` seconds it is killed and `TimedOut`
    raised."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env={**os.environ, **env} if env else None)
    deadline = time.monotonic() + timeout if timeout else None
    # Polled, not waited for by subprocess: wait4 gives the child's own peak RSS (the output is
    # one JSON line, which the pipe holds).
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if deadline and time.monotonic() > deadline:
            process.kill()
            os.wait4(process.pid, 0)
            raise TimedOut(f"{Path(command[1] if len(command) > 1 and command[1].endswith('.py') else command[0]).name} passed {timeout} s")
        time.sleep(0.05)
    out = process.stdout.read()
    if status != 0:
        raise RuntimeError(f"{command[0]} failed ({status}): {out}")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def psnr(a, b):
    x = np.asarray(Image.open(a).convert("RGB"), dtype=np.float64)
    y = np.asarray(Image.open(b).convert("RGB"), dtype=np.float64)
    mse = ((x - y) ** 2).mean()
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def openvino_mode(cpu):
    """The OpenVINO provider's best mode on this CPU: (flag, precision, label)."""
    return ("openvino", "bf16", "Lambent, OpenVINO EP bf16") if cpu.native_bf16 else \
        ("openvino-fp32", "fp32", "Lambent, OpenVINO EP fp32 (this CPU computes no bf16)")


def fma_engine(cpu):
    """Whether the worker's mode runs the models on Lambent's own engine in fp32 on FMA here: a CPU
    with AVX2 and FMA that computes no bf16 of its own (shared/amx/src/fma.rs)."""
    return cpu.avx2 and not cpu.native_bf16


def worker_label(cpu, openvino):
    """What the worker's mode computes with on this CPU, for the tables' titles: every shipped model
    runs on Lambent's own engine (shared/amx) on AMX, or in fp32 on FMA where the CPU computes no
    bf16; elsewhere on OpenVINO."""
    if cpu.amx:
        return "Lambent's AMX engine bf16"
    if fma_engine(cpu):
        return "Lambent's FMA engine fp32"
    return openvino[2].removeprefix('Lambent, ')


def upscaling():
    # The clock and the units again, now: a VM's clock changes during a run (a full run of
    # 2026-12-06 read 3.10 GHz at its start, then AMX at 104% of that peak half an hour later),
    # and the fractions below are only as right as the clock beside them.
    measured_ghz.cache_clear()
    measured_unit_gflops.cache_clear()
    cpu = Cpu()
    side = 256
    source = crop("chelsea.png", side, f"chelsea-{side}.png")
    megapixels = side * side / 1e6
    print(f"Upscaling x4, a {side}x{side} crop of a real photo (chelsea), on {cpu.line()}.")
    print("Seconds per input megapixel; the rate of the model's convolutions, its share of the CPU's peak for the")
    print("precision used and of what that unit sustains (below); peak RSS of the process; PSNR against PyTorch fp32")
    print("(same weights; the input mirrored 10 px at its edges on both sides). Each engine in its best mode for this")
    print("CPU. PyTorch's time is the model's forward pass; Lambent's is the worker's whole path: the tiles read, the")
    print("model, the output's samples and its PNG encoding.")
    print()
    print("| model | engine | s/MP | GFLOP/s | of peak | of the unit | peak RSS MB | PSNR vs PyTorch fp32 | vs best PyTorch |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    torch_modes = [("fp32", "PyTorch fp32")]
    if cpu.native_bf16:
        torch_modes.append(("bf16", f"PyTorch bf16 autocast ({'AMX' if cpu.amx else 'AVX-512 BF16'})"))
    openvino = openvino_mode(cpu)
    for model in ("realesrgan-x4plus", "realesr-animevideov3-x4"):
        onnx_path = MODELS / f"{model}.onnx"
        flop_per_mp = conv_flops_per_input_pixel(onnx_path) * 1e6
        rows, skipped = [], []
        reference = WORK / f"{model}-torch-fp32.png"
        for mode, name in torch_modes:
            out = WORK / f"{model}-torch-{mode}.png"
            try:
                result, rss = run([str(PEERS), str(ROOT / "infra/bench/torch_peer.py"), str(onnx_path), str(source),
                                   str(out), mode], timeout=PEER_TIMEOUT)
                rows.append((name, mode, result["run_seconds"] / megapixels, rss, out, True))
            except TimedOut as why:
                skipped.append((name, str(why)))
        lambent = [("cpu", "fp32", "Lambent, ONNX Runtime fp32 (exact)"), openvino]
        if cpu.amx:
            # The worker's mode runs the models on Lambent's AMX engine; OpenVINO beside it.
            lambent = [lambent[0], ("openvino", "bf16", "Lambent, its AMX engine bf16 (the worker's)"),
                       ("openvino-only", "bf16", "Lambent, OpenVINO EP bf16")]
        elif fma_engine(cpu):
            # The worker's mode runs the models on Lambent's engine in fp32 on FMA; OpenVINO beside it.
            lambent = [lambent[0], ("openvino", "fp32", "Lambent, its FMA engine fp32 (the worker's)"), openvino]
        if cpu.native_bf16:
            # Not the worker's choice here (bf16 is faster), but the same engine against the fp32 peak.
            lambent.append(("openvino-fp32", "fp32", "Lambent, OpenVINO EP fp32"))
        for provider, precision, name in lambent:
            out = WORK / f"{model}-lambent-{provider}.png"
            try:
                result, rss = run([str(UPSCALE), model, str(source), str(out), "--provider", provider, "--repeat", "2"],
                                  timeout=PEER_TIMEOUT)
                rows.append((name, precision, result["run_seconds"] / megapixels, rss, out, False))
            except TimedOut as why:
                skipped.append((name, str(why)))
        torch_rows = [r for r in rows if r[5]]
        best_torch = min((r[2] for r in torch_rows), default=None)
        for name, precision, spmp, rss, out, _ in rows:
            gflops = flop_per_mp / spmp / 1e9
            share = gflops / cpu.peak_gflops(precision)
            unit = cpu.unit_gflops(precision)
            of_unit = f"{gflops / unit:.0%}" if unit else "-"
            # The reference itself: no PSNR to give (it read "inf dB").
            quality = f"{psnr(out, reference):.1f} dB" if reference.exists() and out != reference else "-"
            ratio = f"{best_torch / spmp:.2f}x" if best_torch else "-"
            print(f"| {model} | {name} | {spmp:.1f} | {gflops:.0f} | {share:.0%} {precision} | {of_unit} | {rss:.0f} | {quality} | {ratio} |")
        for name, why in skipped:
            print(f"| {model} | {name} | timed out ({why}) | | | | | | |")
    print()
    if fma_engine(cpu):
        print("The FMA engine computes the 3x3 convolutions by Winograd's F(4x4, 3x3), 4 times fewer multiplies than")
        print("the direct convolutions whose FLOP the rates above count: its rate can pass the peak.")
        print()
    ceilings(cpu, openvino, side + 2 * EDGE_PAD)
    seams(cpu, openvino)
    memory_growth(cpu, openvino)


def ceilings(cpu=None, openvino=None, side=256 + 2 * EDGE_PAD):
    """What the precision's unit sustains alone (units.c), and what the worker's engine reaches on
    plain stacks of 3x3 convolutions of one width at the models' input size above (ceiling.py):
    how far this CPU and its kernels let a model of these layer shapes go."""
    cpu = cpu or Cpu()
    openvino = openvino or openvino_mode(cpu)
    precision = openvino[1]
    peak = cpu.peak_gflops(precision)
    unit, unit_gflops = cpu.unit(precision), cpu.unit_gflops(precision)
    print(f"Ceilings, {precision} (the precision of {openvino[2].removeprefix('Lambent, ')} above): the peak, what its unit sustains")
    print("alone on every core (units.c: that instruction on random operands, nothing else), and what the same engine")
    print(f"and settings as the worker reach on a stack of {CEILING_DEPTH} 3x3 convolutions of one width (each with a per-channel")
    print(f"PReLU) at the models' input size, {side}x{side}. x4plus's convolutions have 32 or 64 channels out and 32 or")
    print("64 in (its dense blocks' convs as the converter writes them, on the parts of their input); animevideov3's 64.")
    print()
    print("| what | GFLOP/s | of peak | of the unit |")
    print("|---|---:|---:|---:|")
    print(f"| the peak: {cpu.flop_per_cycle(precision)} FLOP a cycle x {cpu.ghz:.2f} GHz x {cpu.cores} cores | {peak:.0f} | 100% | |")
    if unit and unit_gflops:
        print(f"| the unit alone: {unit[1]} | {unit_gflops:.0f} | {unit_gflops / peak:.0%} | 100% |")
        if unit_gflops > peak * 1.02:
            print("| (the unit measured above the peak: the clock was read lower than the cores ran, so every"
                  " share of peak above is too high) | | | |")
    else:
        print(f"| the unit alone: {'not measured (units.c could not be built or run)' if unit else 'no such unit'} | | | |")
    engine = "bf16" if precision == "bf16" else "f32"
    for channels in (32, 64, 128, 256):
        label = f"{openvino[2].removeprefix('Lambent, ')}, {channels} channels in and out"
        try:
            result, _ = run([sys.executable, str(ROOT / "infra/bench/ceiling.py"), engine, str(side), str(side),
                             str(CEILING_DEPTH), str(channels)], timeout=PEER_TIMEOUT,
                            env={"PYTHONPATH": str(ROOT / ".venv" / "openvino")})
        except TimedOut as why:
            print(f"| {label}: timed out ({why}) | | | |")
            continue
        gflops = result["flop"] / result["seconds"] / 1e9
        of_unit = f"{gflops / unit_gflops:.0%}" if unit_gflops else "-"
        print(f"| {label} | {gflops:.0f} | {gflops / peak:.0%} | {of_unit} |")
    print()


def seams(cpu=None, openvino=None):
    """What tiling costs in quality and time: the whole chelsea photo (451x300, fur), larger than
    one tile, tiled as the worker tiles it beside untiled and beside Real-ESRGAN's own pad of 10."""
    cpu = cpu or Cpu()
    openvino = openvino or openvino_mode(cpu)
    photos()
    source = WORK / "chelsea-rgb.png"
    image = Image.open(WORK / "chelsea.png").convert("RGB")
    image.save(source)
    megapixels = image.width * image.height / 1e6
    print(f"Tiles and their seams (the whole chelsea photo, {image.width}x{image.height}, {worker_label(cpu, openvino)}): PSNR of the")
    print("tiled output against the same engine untiled, and against exact fp32 (ONNX Runtime) untiled. The worker")
    print("reads each model's own context where tiles meet (x4plus 24 px, animevideov3 10; on OpenVINO widened until")
    print("the model's input width is a multiple of 16) and mirrors 10 px at the image's edges.")
    print()
    print("| model | tiles | s/MP | PSNR vs untiled | PSNR vs exact fp32 untiled |")
    print("|---|---|---:|---:|---:|")
    # The worker's own tiles (no --tile: its engine's side, which the tool reports) beside fixed ones.
    for model, configs in (
        ("realesrgan-x4plus", [("untiled", ["--tile", "0"]), ("{tile} px, context 24 (the worker's)", []),
                               ("256 px, context 24", ["--tile", "256"]),
                               ("192 px, context 24", ["--tile", "192"]),
                               ("256 px, tile_pad 10 (Real-ESRGAN's default)", ["--tile", "256", "--tile-pad", "10"])]),
        ("realesr-animevideov3-x4", [("untiled", ["--tile", "0"]), ("{tile} px, context 10 (the worker's)", []),
                                     ("256 px, context 10", ["--tile", "256"])]),
    ):
        exact = WORK / f"seams-{model}-exact.png"
        try:
            run([str(UPSCALE), model, str(source), str(exact), "--provider", "cpu", "--tile", "0"], timeout=PEER_TIMEOUT)
        except TimedOut as why:
            print(f"| {model} | exact fp32 untiled: timed out ({why}) | | | |")
            continue
        untiled = None
        for label, flags in configs:
            out = WORK / f"seams-{model}-{'-'.join(flags[1::2]) or 'default'}.png"
            try:
                result, _ = run([str(UPSCALE), model, str(source), str(out), "--provider", "openvino", *flags, "--repeat", "2"],
                                timeout=PEER_TIMEOUT)
            except TimedOut as why:
                print(f"| {model} | {label}: timed out ({why}) | | | |")
                continue
            untiled = untiled or out
            versus = psnr(out, untiled)
            # A tile as large as the photo is the untiled run: the same pixels.
            same = "-" if out == untiled else "identical" if versus == float("inf") else f"{versus:.1f} dB"
            label = label.format(tile=result.get("tile", "?"))
            print(f"| {model} | {label} | {result['run_seconds'] / megapixels:.1f} | {same} | {psnr(out, exact):.1f} dB |")
    print()


def memory_growth(cpu=None, openvino=None):
    """Peak RSS of the worker's upscaling path, streamed and in memory, as the input grows."""
    cpu = cpu or Cpu()
    openvino = openvino or openvino_mode(cpu)
    photos()
    print(f"Lambent's peak memory as the input grows ({worker_label(cpu, openvino)}, the worker's tiles; crops of retina.jpg,"
          " enlarged for 2048): the worker's path, which encodes each band of tiles as it finishes (PNG), beside the"
          " whole output made in memory, then encoded (the path before #17, still used for another outscale or WebP):")
    print()
    print("| model | input | tile px | s/MP | peak RSS MB, streamed | peak RSS MB, in memory | the x4 output image alone, MB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    sizes = [("realesrgan-x4plus", side) for side in (256, 512, 1024)]
    sizes += [("realesr-animevideov3-x4", side) for side in (256, 512, 1024, 2048)]
    for model, side in sizes:
        source = crop("retina.jpg", side, f"retina-{side}.png")
        out = WORK / f"retina-{side}-{model}.png"
        figures, tile = [], "-"
        for flags in ([], ["--in-memory"]):
            try:
                result, rss = run([str(UPSCALE), model, str(source), str(out), "--provider", "openvino", *flags],
                                  timeout=PEER_TIMEOUT)
                figures.append((result["run_seconds"] / (side * side / 1e6), rss))
                tile = result.get("tile", tile)
            except TimedOut as why:
                figures.append((None, f"timed out ({why})"))
        spmp = f"{figures[0][0]:.1f}" if figures[0][0] is not None else "-"
        cells = [f"{rss:.0f}" if isinstance(rss, float) else rss for _, rss in figures]
        output_mb = (4 * side) ** 2 * 3 / 1e6
        print(f"| {model} | {side}x{side} | {tile} | {spmp} | {cells[0]} | {cells[1]} | {output_mb:.0f} |")
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


OPENCV_END_TO_END = """
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
import cv2
threads = int(sys.argv[1])
cv2.setNumThreads(1)
paths = sys.argv[2:]
def score(path):
    image = cv2.imread(path)
    return cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
best = float("inf")
with ThreadPoolExecutor(threads) as pool:
    for _ in range(5):
        started = time.perf_counter()
        scores = list(pool.map(score, paths))
        best = min(best, time.perf_counter() - started)
print(json.dumps({"seconds": best, "scores": scores}))
"""


def best_cut_end_to_end():
    """Six 12 MP camera JPEGs (retina.jpg at 4000x3000, quality 92, sharper and blurrier), read,
    decoded and scored: OpenCV's imread (libjpeg-turbo) with the photos across a thread pool (cv2
    lets go of the GIL), beside the worker's decode and score across the same threads."""
    from PIL import ImageFilter

    base = Image.open(WORK / "retina.jpg").convert("RGB").resize((4000, 3000), Image.LANCZOS)
    paths = []
    for i, radius in enumerate((0, 0.8, 1.5, 2.2, 3, 4)):
        path = WORK / f"camera-{i}.jpg"
        (base.filter(ImageFilter.GaussianBlur(radius)) if radius else base).save(path, quality=92)
        paths.append(str(path))
    megapixels = 6 * 12.0
    threads = os.cpu_count()
    opencv, _ = run([sys.executable, "-c", OPENCV_END_TO_END, str(threads), *paths])
    ours, _ = run([str(BESTCUT), "--repeat", "5", "--end-to-end", *paths])
    same_winner = np.argmax(ours["scores"]) == np.argmax(opencv["scores"])
    print(f"Best-cut end to end: six 12 MP camera JPEGs read, decoded and scored, {threads} threads, fastest of 5 passes.")
    print()
    print("| engine | MP/s | vs OpenCV |")
    print("|---|---:|---:|")
    base_rate = megapixels / opencv["seconds"]
    for name, result in (("OpenCV 4.12 imread + cvtColor + Laplacian + var, a thread per photo", opencv),
                         ("Lambent bestcut::score_encoded (the worker's: zune-jpeg into a buffer kept per thread, AVX2 scoring), a photo per thread", ours)):
        rate = megapixels / result["seconds"]
        print(f"| {name} | {rate:.0f} | {rate / base_rate:.2f}x |")
    print()
    print(f"Same winner: {'yes' if same_winner else 'NO'}.")
    print()


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
    best_cut_end_to_end()
    upscaling()


if __name__ == "__main__":
    main()
