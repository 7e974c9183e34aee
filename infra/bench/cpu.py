"""The CPU `make bench` runs on: its model, cores, vector and matrix extensions, and peak rates, so
each peer runs in its best mode for this CPU (no bf16 where it would be emulated) and figures are
told as fractions of what the machine can do.

Peak per core and cycle, from the vendors' instruction tables (two FMA pipes on every CPU listed):
- fp32: AVX2+FMA 2 x 8 lanes x 2 = 32 FLOP; AVX-512 2 x 16 x 2 = 64 FLOP.
- bf16: AMX (TMUL) 1,024 FLOP; AVX-512 BF16 (vdpbf16ps) 2 x 32 x 2 = 128 FLOP; otherwise none
  (bf16 is converted to fp32 in software: PyTorch's autocast then runs slower than fp32).
- AMD Zen 4 (family 0x19 with AVX-512; Zen 3 shares the family, without it) runs a 512-bit
  instruction through its two 256-bit pipes together, so AVX-512 adds no FLOP per cycle there:
  fp32 32, bf16 64 (A. Yee's Zen 4 and Zen 5 AVX-512 teardowns, numberworld.org; Zen 5, family
  0x1A, has full-width pipes).
The clock is measured: every core at once runs a chain of dependent multiplies (`clock.c`, built
with gcc), so it is the clock the cores hold under load, turbo included. (Dependent `add $1`s read
23.5 GHz on a Xeon whose renamer folds them; a register add chain and the multiplies agree on
3.98.) A VM's /proc/cpuinfo shows the nominal clock only (2.60 GHz on an EPYC whose cores ran at
3.67), which made fractions of peak read over 100%. Where the measurement cannot run, the highest `cpu MHz` is used and said so.

The tables' peak is not what a unit sustains, so that is measured too (`units.c`, built with gcc):
every core runs the precision's widest instruction (vfmadd231ps; AMX's tdpbf16ps or AVX-512
BF16's vdpbf16ps) on random operands, nothing else. On the Xeon with AMX of 2026-12-06 the
FMAs reached the tables' rate, AMX 81–83% of it (3.3 of the 4.1 TFLOP/s a core should do at
3.98 GHz; on zero tiles it ran at the full rate, so the operands are random), and vdpbf16ps a
quarter of the 128 FLOP a cycle assumed above (one every two cycles on this core)."""

import functools
import os
import platform
import re
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).parent
BUILT = Path(__file__).resolve().parents[2] / ".local" / "bench"


def _cpuinfo():
    try:
        return open("/proc/cpuinfo").read()
    except OSError:
        return ""


def _measure(name, *args):
    """Builds `name`.c (again when the source is newer) and runs it; its output, or None where it
    cannot be built or run."""
    source, binary = HERE / f"{name}.c", BUILT / name
    try:
        if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
            binary.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["gcc", "-O2", "-pthread", "-o", str(binary), str(source)],
                           check=True, capture_output=True, timeout=60)
        out = subprocess.run([str(binary), *map(str, args)], check=True, capture_output=True,
                             text=True, timeout=120).stdout
        return float(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


@functools.cache
def measured_ghz(cores):
    """The mean clock of `cores` cores all busy at once, or None where it cannot be measured: the
    highest of three readings a second apart, as a process still ending elsewhere lowers a
    reading and never raises it. A VM's clock also changes during a run (a full run of 2026-12-06
    read 3.10 GHz at its start, where the runs before and after it read 3.98, and was 2 to 33%
    slower throughout), so the upscaling tables read it again (`photos.upscaling`)."""
    readings = []
    for attempt in range(3):
        if attempt:
            time.sleep(1)
        readings.append(_measure("clock", cores))
    return max((r for r in readings if r is not None), default=None)


@functools.cache
def measured_unit_gflops(kind, cores):
    """What `cores` cores together sustain on `kind`'s instruction (units.c), or None."""
    return _measure("units", kind, cores)


class Cpu:
    def __init__(self):
        info = _cpuinfo()
        model = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
        self.model = model.group(1).strip() if model else platform.machine()
        flags = re.search(r"^flags\s*:\s*(.+)$", info, re.M)
        self.flags = set(flags.group(1).split()) if flags else set()
        clocks = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)$", info, re.M)]
        nominal = re.search(r"@\s*([\d.]+)\s*GHz", self.model)
        self.nominal_ghz = max(clocks) / 1000 if clocks else (float(nominal.group(1)) if nominal else 2.0)
        self.cores = os.cpu_count() or 1
        measured = measured_ghz(self.cores)
        self.clock_measured = measured is not None
        self.ghz = measured if measured is not None else self.nominal_ghz
        vendor = re.search(r"^vendor_id\s*:\s*(\S+)$", info, re.M)
        family = re.search(r"^cpu family\s*:\s*(\d+)$", info, re.M)
        # Zen 4 splits a 512-bit instruction over its two 256-bit pipes.
        self.half_width_512 = (vendor and vendor.group(1) == "AuthenticAMD"
                               and family and int(family.group(1)) == 0x19)
        self.avx2 = {"avx2", "fma"} <= self.flags
        self.avx512 = "avx512f" in self.flags
        self.vnni = bool({"avx512_vnni", "avx_vnni"} & self.flags)
        self.amx = {"amx_bf16", "amx_tile"} <= self.flags
        self.avx512_bf16 = "avx512_bf16" in self.flags
        # bf16 is native where a unit computes it; elsewhere it is emulated.
        self.native_bf16 = self.amx or self.avx512_bf16

    def extensions(self):
        names = [("AVX2+FMA", self.avx2), ("AVX-512", self.avx512), ("VNNI", self.vnni),
                 ("AVX-512 BF16", self.avx512_bf16), ("AMX", self.amx)]
        found = [name for name, present in names if present]
        return ", ".join(found) if found else "no AVX2"

    def fp32_flop_per_cycle(self):
        if self.avx512 and not self.half_width_512:
            return 64
        return 32 if self.avx2 else 8

    def bf16_flop_per_cycle(self):
        if self.amx:
            return 1024
        if self.avx512_bf16:
            return 64 if self.half_width_512 else 128
        return 0

    def flop_per_cycle(self, precision):
        return self.bf16_flop_per_cycle() if precision == "bf16" else self.fp32_flop_per_cycle()

    def peak_gflops(self, precision):
        return self.flop_per_cycle(precision) * self.ghz * self.cores

    def unit(self, precision):
        """The instruction the peak of `precision` counts on: (units.c's kind, its name), or None."""
        if precision == "bf16":
            if self.amx:
                return "amx", "AMX tdpbf16ps"
            return ("dpbf16", "AVX-512 BF16 vdpbf16ps") if self.avx512_bf16 else None
        if self.avx512:
            return "fma512", "AVX-512 vfmadd231ps"
        return ("fma256", "AVX2 vfmadd231ps") if self.avx2 else None

    def unit_gflops(self, precision):
        """What the unit of `precision` sustains on every core at once, measured; or None."""
        unit = self.unit(precision)
        return measured_unit_gflops(unit[0], self.cores) if unit else None

    def line(self):
        clock = (f"{self.ghz:.2f} GHz measured under load (/proc/cpuinfo: {self.nominal_ghz:.2f})"
                 if self.clock_measured else f"{self.ghz:.2f} GHz (nominal: not measured)")
        return (f"{self.model}, {self.cores} cores at {clock}, {self.extensions()}; "
                f"peak {self.peak_gflops('fp32'):.0f} GFLOP/s fp32"
                + (f", {self.peak_gflops('bf16'):.0f} GFLOP/s bf16" if self.native_bf16 else
                   ", bf16 emulated (no bf16 peer is run)"))


def conv_flops_per_input_pixel(onnx_path):
    """Multiply-adds x 2 of every convolution of a converted model, per input pixel, from its
    graph with shapes inferred on a 64x64 input (the models are fully convolutional)."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(onnx_path))
    graph = model.graph
    first = graph.input[0]
    for i, size in enumerate((1, 3, 64, 64)):
        first.type.tensor_type.shape.dim[i].dim_value = size
    inferred = shape_inference.infer_shapes(model).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in
              list(inferred.value_info) + list(inferred.output) + list(inferred.input)}
    weights = {i.name: list(i.dims) for i in graph.initializer}
    flops = 0
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        out = shapes.get(node.output[0])
        kernel = weights.get(node.input[1])
        if not out or not kernel or len(out) != 4:
            raise ValueError(f"no shape for {node.name or node.output[0]}")
        cout, cin, kh, kw = kernel
        flops += 2 * cout * cin * kh * kw * out[2] * out[3]
    return flops / (64 * 64)


if __name__ == "__main__":
    print(Cpu().line())
