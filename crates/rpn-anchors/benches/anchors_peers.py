"""Times the peers on the inputs of `benches/anchors.rs` and dumps their outputs for the equality check.

Run by `cargo xtask bench` (with the oracle virtualenv from `cargo xtask oracles`); threads are pinned
to 2 (torch.set_num_threads, OMP/MKL/OpenBLAS env set by xtask). Writes, under the directory given as
argv[1] (default target/bench):
  * anchors_io.safetensors  inputs (anchors, targets, raw deltas) and every peer's outputs;
  * anchors_peers.json      median milliseconds per operation and peer.

Peers: torchvision `AnchorGenerator`, `BoxCoder.encode_single/decode_single`; Matterport (`mrcnn-colab`)
`utils.generate_pyramid_anchors`, `box_refinement` (÷ RPN_BBOX_STD_DEV), `apply_box_deltas`.
"""

import json
import math
import os
import sys
import time

import torch  # before TensorFlow (imported by mrcnn.utils): the other order aborts in LLVM
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.image_list import ImageList

import numpy as np
from mrcnn import utils as mp_utils
from safetensors.numpy import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tests", "fixtures"))
from peers import median_ms  # noqa: E402

torch.set_num_threads(2)
out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join("target", "bench")
os.makedirs(out_dir, exist_ok=True)




STD = np.array([0.1, 0.1, 0.2, 0.2])
STD32 = STD.astype(np.float32)
SCALES, RATIOS, STRIDES = (32, 64, 128, 256, 512), [0.5, 1, 2], [4, 8, 16, 32, 64]
shapes = np.array([(math.ceil(1024 / s), math.ceil(1024 / s)) for s in STRIDES])


def mp_anchors():
    return mp_utils.generate_pyramid_anchors(SCALES, RATIOS, shapes, STRIDES, 1)


tv_gen = AnchorGenerator(sizes=((32,), (64,), (128,), (256,), (512,)), aspect_ratios=((0.5, 1.0, 2.0),) * 5)
tv_images = ImageList(torch.zeros(1, 3, 800, 1344), [(800, 1344)])
tv_feats = [torch.zeros(1, 1, h, w) for h, w in [(200, 336), (100, 168), (50, 84), (25, 42), (13, 21)]]


def tv_anchors():
    return tv_gen(tv_images, tv_feats)[0]


# Inputs shared with the Rust bench: Matterport's 1024² pyramid (pixels), targets = anchors moved by
# a seeded jitter, raw deltas ~ N(0, 1).
rng = np.random.default_rng(7)
anchors_yx = mp_anchors().astype(np.float32)
n = len(anchors_yx)
h = anchors_yx[:, 2] - anchors_yx[:, 0]
w = anchors_yx[:, 3] - anchors_yx[:, 1]
jit = rng.uniform(-0.3, 0.3, (n, 4)).astype(np.float32) * np.stack([h, w, h, w], axis=1)
targets_yx = (anchors_yx + jit).astype(np.float32)
raw = rng.normal(0.0, 1.0, (n, 4)).astype(np.float32)
anchors_xy = np.ascontiguousarray(anchors_yx[:, [1, 0, 3, 2]])
targets_xy = np.ascontiguousarray(targets_yx[:, [1, 0, 3, 2]])
ta, tt, tr = torch.from_numpy(anchors_xy), torch.from_numpy(targets_xy), torch.from_numpy(raw)
coder = BoxCoder((1.0, 1.0, 1.0, 1.0))

io = {
    "anchors_yxyx": anchors_yx,
    "targets_yxyx": targets_yx,
    "raw_deltas": raw,
    "mp/encoded": (mp_utils.box_refinement(anchors_yx, targets_yx) / STD).astype(np.float32),
    "mp/decoded_yxyx": mp_utils.apply_box_deltas(anchors_yx, raw * STD32).astype(np.float32),
    "mp/anchors_yxyx": mp_anchors().astype(np.float32),
    "tv/encoded": coder.encode_single(tt, ta).numpy(),
    "tv/decoded_xyxy": coder.decode_single(tr, ta).numpy(),
    "tv/anchors_800x1344_xyxy": tv_anchors().numpy(),
}
save_file({k: np.ascontiguousarray(v) for k, v in io.items()}, os.path.join(out_dir, "anchors_io.safetensors"))

timings = {
    "generate_matterport_1024": {"matterport": median_ms(mp_anchors)},
    "generate_torchvision_800x1344": {"torchvision": median_ms(tv_anchors)},
    "encode_261888": {
        "matterport": median_ms(lambda: mp_utils.box_refinement(anchors_yx, targets_yx) / STD),
        "torchvision": median_ms(lambda: coder.encode_single(tt, ta)),
    },
    "decode_261888": {
        "matterport": median_ms(lambda: mp_utils.apply_box_deltas(anchors_yx, raw * STD32)),
        "torchvision": median_ms(lambda: coder.decode_single(tr, ta)),
    },
}
with open(os.path.join(out_dir, "anchors_peers.json"), "w") as f:
    json.dump({"threads": 2, "torch": torch.__version__, "numpy": np.__version__, "ms": timings}, f, indent=2)
print(json.dumps(timings, indent=2))
