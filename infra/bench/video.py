"""Video (make bench): probe, packet scan, frame capture, trims, strip and preview of a 60 s 1080p
clip, Lambent's worker path (`lambent-video-bench`, release build: the worker's own `Toolchain`)
beside the same static FFmpeg called from Python as a FastAPI backend (LOKIZ's) would, each in its
best mode (input seeking, packets copied where they can be). Then the worker's memory while it
imports a ~195 MB upload through the local stack, read from /proc and from the worker's own log of
each FFmpeg run.

The clips are made here by FFmpeg from a test pattern (VIDEO_BENCH_SECONDS, default 60)."""

import json
import os
import re
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".venv" / "ffmpeg" / "ffmpeg" / "binaries"
SECONDS = int(os.environ.get("VIDEO_BENCH_SECONDS", "60"))
RUNS = int(os.environ.get("VIDEO_BENCH_RUNS", "5"))


def ffmpeg(*args):
    subprocess.run([str(TOOLS / "ffmpeg"), "-nostdin", "-v", "error", "-y", *args], check=True)


def timed(runs, work):
    samples = []
    for _ in range(max(runs, 1)):
        started = time.perf_counter()
        work()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def python_peer(clip, folder, info):
    """The same operations the way a Python backend runs FFmpeg: subprocess, JSON probe, input
    seeking (its fastest exact mode), `-c copy` for the keyframe range; the same arguments as the
    worker's, so the difference is what runs them."""
    probe_cmd = [str(TOOLS / "ffprobe"), "-v", "error", "-print_format", "json", "-show_format", "-show_streams", clip]
    scan_cmd = [str(TOOLS / "ffprobe"), "-v", "error", "-select_streams", "v:0", "-show_entries",
                "packet=pts_time,flags", "-of", "csv=p=0", clip]
    start, end, frames = info["range"]["start"], info["range"]["end"], info["range"]["frames"]
    mid = info["clip"]["duration"] / 2 + 0.5 / info["clip"]["fps"]
    out = lambda name: str(Path(folder) / name)
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)
    duration = info["clip"]["duration"]
    rows = {
        "probe": timed(RUNS, lambda: json.loads(run(*probe_cmd).stdout)),
        "scan": timed(RUNS, lambda: run(*scan_cmd)),
        "capture_frame": timed(RUNS, lambda: ffmpeg("-ss", f"{mid:.6f}", "-i", clip, "-frames:v", "1", out("f.png"))),
        "trim_copy": timed(RUNS, lambda: ffmpeg("-ss", f"{start:.6f}", "-i", clip, "-t", f"{end - start:.6f}",
                                                "-frames:v", str(frames), "-c", "copy", out("c.mp4"))),
        "trim_reencode": timed(max(RUNS // 2, 1), lambda: ffmpeg(
            "-ss", f"{start + 0.5:.6f}", "-i", clip, "-t", f"{end - start:.6f}", "-map", "0:v:0", "-map", "0:a:0?",
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a",
            "160k", "-movflags", "+faststart", out("e.mp4"))),
        "strip": timed(RUNS, lambda: [ffmpeg("-ss", f"{duration * (i + 0.5) / 10:.6f}", "-i", clip, "-frames:v", "1",
                                             "-vf", "scale=-2:90", "-q:v", "3", out(f"s{i}.jpg")) for i in range(10)]),
        "preview": timed(max(RUNS // 2, 1), lambda: ffmpeg(
            "-i", clip, "-t", "10", "-map", "0:v:0", "-an", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "400k",
            "-maxrate", "500k", "-bufsize", "1000k", "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-vf",
            "scale=-2:'min(360,ih)'", out("p.mp4"))),
    }
    # What a naive port does for the frame: seeking on the output decodes from the start.
    rows["capture_frame (output seeking, a naive port)"] = timed(
        max(RUNS // 2, 1), lambda: ffmpeg("-i", clip, "-ss", f"{mid:.6f}", "-frames:v", "1", out("n.png")))
    return rows


def call(method, url, body=None, token=None, data=None, headers=None):
    payload = data if data is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=payload, method=method)
    if body is not None:
        request.add_header("content-type", "application/json")
    for k, v in (headers or {}).items():
        request.add_header(k, v)
    if token:
        request.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=600) as response:
        raw = response.read()
        return response.status, json.loads(raw) if raw else None


def status_kib(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def worker_memory(folder):
    """Imports a ~195 MB upload through the local stack (release `lambent-dev`: gateway and worker
    in one process); the process's peak resident set before and after, and the largest FFmpeg run's."""
    clip = str(Path(folder) / "big.mp4")
    # Lossless H.264 of a 1080p pattern: about 4.25 MB a second.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30", "-t", "46", "-c:v", "libx264", "-preset",
           "ultrafast", "-crf", "0", "-pix_fmt", "yuv420p", clip)
    size = os.path.getsize(clip)
    log = open(Path(folder) / "stack.log", "w+")
    env = dict(os.environ, PORT="0", RUST_LOG="info", VIDEO_WORK_DIR=folder)
    stack = subprocess.Popen([str(ROOT / "target/release/lambent-dev")], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = None
        for _ in range(1200):
            log.seek(0)
            found = re.search(r"serving on (\S+)\s+\(AWS emulator", log.read())
            if found:
                base = found.group(1)
                break
            time.sleep(0.1)
        assert base, "the stack did not start"
        _, user = call("POST", f"{base}/v1/auth/register",
                       {"email": "bench-video@example.com", "username": "benchvideo", "password": "correct horse"})
        token = user["access_token"]
        before_kib = status_kib(stack.pid, "VmHWM:")
        _, upload = call("POST", f"{base}/v1/uploads", {"content_type": "video/mp4", "size": size}, token)
        with open(clip, "rb") as body:
            data = body.read()
        call("PUT", upload["url"], data=data, headers={"content-type": "video/mp4"})
        del data
        started = time.perf_counter()
        _, made = call("POST", f"{base}/v1/videos", {"upload_key": upload["key"]}, token)
        while True:
            _, video = call("GET", f"{base}/v1/videos/{made['id']}", token=token)
            if video["status"] in ("COMPLETED", "FAILED"):
                break
            time.sleep(0.2)
        took = time.perf_counter() - started
        after_kib = status_kib(stack.pid, "VmHWM:")
        log.seek(0)
        peaks = [int(m) for m in re.findall(r'"peak_rss_mib":(\d+)', log.read())]
        return {"bytes": size, "status": video["status"], "seconds": took, "hwm_before_mb": before_kib / 1024,
                "hwm_after_mb": after_kib / 1024, "largest_ffmpeg_mb": max(peaks, default=0), "runs": len(peaks)}
    finally:
        stack.kill()
        stack.wait()
        log.close()


def main():
    with tempfile.TemporaryDirectory() as folder:
        clip = str(Path(folder) / "clip.mp4")
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30", "-f", "lavfi", "-i",
               "sine=frequency=440:sample_rate=48000", "-t", str(SECONDS), "-c:v", "libx264", "-preset", "veryfast",
               "-g", "60", "-pix_fmt", "yuv420p", "-c:a", "aac", clip)
        out = subprocess.run([str(ROOT / "target/release/lambent-video-bench"), "--file", clip, "--runs", str(RUNS)],
                             check=True, capture_output=True, text=True)
        info = json.loads(out.stdout.strip().splitlines()[-1])
        peer = python_peer(clip, folder, info)
        c = info["clip"]
        print(f"Video: a {c['duration']:.0f} s {c['width']}x{c['height']} H.264 + AAC clip at {c['fps']:.0f} fps "
              f"({c['bytes'] / 1e6:.1f} MB, {c['keyframes']} keyframes), the static FFmpeg 6.0 of infra/video, "
              f"{info['threads']} threads; median of {RUNS} runs (encodes {max(RUNS // 2, 1)}).")
        print()
        print("| operation | Lambent worker ms | Python + FFmpeg ms | Python / Lambent |")
        print("|---|---:|---:|---:|")
        for name in ("probe", "scan", "capture_frame", "trim_copy", "trim_reencode", "strip", "preview"):
            ms = info["ops"][name]["median_ms"]
            print(f"| {name} | {ms:.0f} | {peer[name]:.0f} | {peer[name] / ms:.2f}x |")
        naive = "capture_frame (output seeking, a naive port)"
        print(f"| {naive} | {info['ops']['capture_frame']['median_ms']:.0f} | {peer[naive]:.0f} | "
              f"{peer[naive] / info['ops']['capture_frame']['median_ms']:.1f}x |")
        print()
        memory = worker_memory(folder)
        print(f"Worker memory, importing a {memory['bytes'] / 1e6:.0f} MB upload (lossless 1080p, 46 s) through "
              f"the local stack: {memory['status']} in {memory['seconds']:.1f} s; the stack's process (gateway and "
              f"worker) peaked at {memory['hwm_before_mb']:.0f} MB before and {memory['hwm_after_mb']:.0f} MB after "
              f"(the upload is streamed to disk, never held); the largest of its {memory['runs']} FFmpeg runs held "
              f"{memory['largest_ffmpeg_mb']} MB.")
        print()


if __name__ == "__main__":
    main()
