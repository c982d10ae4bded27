"""Times the peers' RPN target building on the inputs of `benches/targets.rs`, dumps their labels.

Run by `cargo xtask bench targets` (oracle virtualenv from `cargo xtask oracles`), threads pinned to 2.
Writes, under argv[1] (default target/bench):
  * targets_io.safetensors  GT sets (10 and 100 boxes, Matterport 1024² image) and each peer's labels
                            before random subsampling, for the equality check;
  * targets_peers.json      median milliseconds of match + sample + encode per peer and GT count.

Peers: Matterport `build_rpn_targets` (from the installed mrcnn/model.py, see
tests/fixtures/gen_targets.py for why it is loaded with `ast`), and torchvision's RPN recipe:
`box_iou` + `Matcher(0.7, 0.3, True)` + `BalancedPositiveNegativeSampler(256, 0.5)` + `BoxCoder.encode`.
"""

import json
import math
import os
import sys
import time

import torch  # before TensorFlow (imported by mrcnn.utils): the other order aborts in LLVM
import torchvision
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, BoxCoder, Matcher

import numpy as np
import mrcnn
from mrcnn import utils as mp_utils
from safetensors.numpy import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tests", "fixtures"))
from peers import matterport_model  # noqa: E402


def median_ms(fn):
    from peers import median_ms as m
    return m(fn, min_runs=5)

torch.set_num_threads(2)
out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join("target", "bench")
os.makedirs(out_dir, exist_ok=True)




build_rpn_targets = matterport_model(["build_rpn_targets"], np=np, utils=mp_utils)["build_rpn_targets"]


class Config:
    def __init__(self, per_image):
        self.RPN_TRAIN_ANCHORS_PER_IMAGE = per_image
        self.RPN_BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])


anchors = mp_utils.generate_pyramid_anchors(
    (32, 64, 128, 256, 512), [0.5, 1, 2], np.array([(math.ceil(1024 / s),) * 2 for s in (4, 8, 16, 32, 64)]),
    [4, 8, 16, 32, 64], 1)
anchors_xy32 = torch.from_numpy(np.ascontiguousarray(anchors[:, [1, 0, 3, 2]]).astype(np.float32))
rng = np.random.default_rng(11)
matcher = Matcher(0.7, 0.3, allow_low_quality_matches=True)
sampler = BalancedPositiveNegativeSampler(256, 0.5)
coder = BoxCoder((1.0, 1.0, 1.0, 1.0))


def torchvision_targets(gt_xy):
    iou = torchvision.ops.box_iou(gt_xy, anchors_xy32)
    matches = matcher(iou)
    labels = (matches >= 0).to(torch.float32)
    labels[matches == Matcher.BELOW_LOW_THRESHOLD] = 0.0
    labels[matches == Matcher.BETWEEN_THRESHOLDS] = -1.0
    pos, neg = sampler([labels])
    matched = gt_xy[matches.clamp(min=0)]
    deltas = coder.encode_single(matched, anchors_xy32)
    return labels, pos, neg, deltas


io, timings = {}, {}
for count in (10, 100):
    sizes = rng.integers(16, 300, (count, 2))
    tl = np.stack([rng.integers(0, 1024 - sizes[:, 0]), rng.integers(0, 1024 - sizes[:, 1])], axis=1)
    gt = np.concatenate([tl, tl + sizes], axis=1).astype(np.int32)  # (y1, x1, y2, x2) pixels
    ids = np.ones(count, dtype=np.int32)
    gt_xy = torch.from_numpy(np.ascontiguousarray(gt[:, [1, 0, 3, 2]]).astype(np.float32))
    io[f"gt{count}_yxyx"] = gt.astype(np.float32)
    io[f"gt{count}/mp/rpn_match"] = build_rpn_targets(None, anchors, ids, gt, Config(2 * len(anchors) + 2))[0].astype(np.int8)
    io[f"gt{count}/tv/labels"] = torchvision_targets(gt_xy)[0].numpy().astype(np.int8)
    timings[f"match_sample_encode_{count}gt"] = {
        "matterport": median_ms(lambda: build_rpn_targets(None, anchors, ids, gt, Config(256))),
        "torchvision": median_ms(lambda: torchvision_targets(gt_xy)),
    }

save_file({k: np.ascontiguousarray(v) for k, v in io.items()}, os.path.join(out_dir, "targets_io.safetensors"))
with open(os.path.join(out_dir, "targets_peers.json"), "w") as f:
    json.dump({"threads": 2, "torch": torch.__version__, "numpy": np.__version__, "ms": timings}, f, indent=2)
print(json.dumps(timings, indent=2))
