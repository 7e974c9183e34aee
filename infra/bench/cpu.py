"""The CPU `make bench` runs on: its model, cores, vector and matrix extensions, and peak rates, so
each peer runs in its best mode for this CPU (no bf16 where it would be emulated) and figures are
told as fractions of what the machine can do.

Peak per core and cycle, from the vendors' instruction tables (two FMA pipes on every CPU listed):
- fp32: AVX2+FMA 2 x 8 lanes x 2 = 32 FLOP; AVX-512 2 x 16 x 2 = 64 FLOP.
- bf16: AMX (TMUL) 1,024 FLOP; AVX-512 BF16 (vdpbf16ps) 2 x 32 x 2 = 128 FLOP; otherwise none
  (bf16 is converted to fp32 in software: PyTorch's autocast then runs slower than fp32).
The clock is the highest `cpu MHz` /proc/cpuinfo reports (a VM shows its nominal clock; turbo is
not counted, so the fractions lean high)."""

import os
import platform
import re


def _cpuinfo():
    try:
        return open("/proc/cpuinfo").read()
    except OSError:
        return ""


class Cpu:
    def __init__(self):
        info = _cpuinfo()
        model = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
        self.model = model.group(1).strip() if model else platform.machine()
        flags = re.search(r"^flags\s*:\s*(.+)$", info, re.M)
        self.flags = set(flags.group(1).split()) if flags else set()
        clocks = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)$", info, re.M)]
        nominal = re.search(r"@\s*([\d.]+)\s*GHz", self.model)
        self.ghz = max(clocks) / 1000 if clocks else (float(nominal.group(1)) if nominal else 2.0)
        self.cores = os.cpu_count() or 1
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
        return 64 if self.avx512 else 32 if self.avx2 else 8

    def bf16_flop_per_cycle(self):
        return 1024 if self.amx else 128 if self.avx512_bf16 else 0

    def peak_gflops(self, precision):
        per_cycle = self.bf16_flop_per_cycle() if precision == "bf16" else self.fp32_flop_per_cycle()
        return per_cycle * self.ghz * self.cores

    def line(self):
        return (f"{self.model}, {self.cores} cores at {self.ghz:.2f} GHz, {self.extensions()}; "
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
