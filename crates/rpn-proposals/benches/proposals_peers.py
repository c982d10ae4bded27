"""Times the peers' NMS and Matterport's proposal layer on the inputs of `benches/proposals.rs`.

Run by `cargo xtask bench proposals` (oracle virtualenv from `cargo xtask oracles`), threads pinned to 2.
Writes, under argv[1] (default target/bench):
  * proposals_io.safetensors  the NMS sets, the proposal layer's inputs, and every peer's output;
  * proposals_peers.json      median milliseconds per operation and peer.

Operations (performance.md §2 and §7): capped NMS 6000 → 1000 on sparse and clustered sets, 12000 → 2000,
per-level NMS over 5 levels × 1000 boxes, and Matterport's full ProposalLayer at 1024² (261,888 anchors,
top 6000 → decode → clip → NMS → 1000), run as a `tf.function`. Peers: torchvision `nms`/`batched_nms`
(no cap: truncated afterwards, as `rpn.py` does), TF `non_max_suppression`, Matterport's ProposalLayer
(taken from the installed mrcnn/model.py, see tests/fixtures/gen_proposals.py).
"""

import json
import math
import os
import sys
import time

import torch  # before TensorFlow: the other order aborts in LLVM
import torchvision

import numpy as np
import tensorflow as tf
import mrcnn
from mrcnn import utils as mp_utils
from safetensors.numpy import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tests", "fixtures"))
from peers import matterport_proposal_layer, median_ms  # noqa: E402

torch.set_num_threads(2)
tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(2)
out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join("target", "bench")
os.makedirs(out_dir, exist_ok=True)
rng = np.random.default_rng(3)




def f32(a):
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def boxes_around(c, s):
    return f32(np.concatenate([c - s / 2, c + s / 2], axis=1))


def sparse(n):
    return boxes_around(rng.uniform(0, 1024, (n, 2)), 32 * np.exp(rng.normal(0, 0.8, (n, 2))) * rng.choice([1, 2, 4, 8], (n, 1))), f32(rng.uniform(0, 1, n))


def clustered(n, objects=40):
    centres, sizes = rng.uniform(100, 924, (objects, 2)), rng.uniform(30, 300, (objects, 2))
    k = int(n * 0.75)
    which, jitter = rng.integers(0, objects, k), rng.normal(0, 0.12, (k, 4))
    fg = boxes_around(centres[which] + jitter[:, :2] * sizes[which], sizes[which] * np.exp(jitter[:, 2:]))
    bg, _ = sparse(n - k)
    return f32(np.concatenate([fg, bg])), f32(np.concatenate([rng.uniform(0.3, 1, k), rng.uniform(0, 0.6, n - k)]))


io, timings = {}, {}
for name, (boxes, scores), cap in (("sparse6000", sparse(6000), 1000), ("clustered6000", clustered(6000), 1000),
                                   ("sparse12000", sparse(12000), 2000), ("clustered12000", clustered(12000), 2000)):
    tb, ts = torch.from_numpy(boxes), torch.from_numpy(scores)
    yx = f32(boxes[:, [1, 0, 3, 2]])
    io[f"{name}/boxes_xyxy"], io[f"{name}/scores"] = boxes, scores
    io[f"{name}/keep"] = torchvision.ops.nms(tb, ts, 0.7)[:cap].numpy().astype(np.int64)
    op = f"nms_{name}_cap{cap}"
    timings[op] = {
        "torchvision": median_ms(lambda: torchvision.ops.nms(tb, ts, 0.7)[:cap]),
        "tensorflow": median_ms(lambda: tf.image.non_max_suppression(yx, scores, cap, 0.7).numpy()),
    }

boxes, scores = sparse(5000)
levels = np.repeat(np.arange(5), 1000)
tb, ts, tl = torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(levels)
io["levels5x1000/boxes_xyxy"], io["levels5x1000/scores"] = boxes, scores
io["levels5x1000/groups"] = levels.astype(np.int64)
io["levels5x1000/keep"] = torchvision.ops.batched_nms(tb, ts, tl, 0.7)[:1000].numpy().astype(np.int64)
timings["batched_nms_5x1000_cap1000"] = {"torchvision": median_ms(lambda: torchvision.ops.batched_nms(tb, ts, tl, 0.7)[:1000])}

# Matterport's ProposalLayer at 1024², inference (1000 proposals).
anchors = mp_utils.generate_pyramid_anchors((32, 64, 128, 256, 512), [0.5, 1, 2],
                                            np.array([(math.ceil(1024 / s),) * 2 for s in (4, 8, 16, 32, 64)]), [4, 8, 16, 32, 64], 1)
anchors = f32(mp_utils.norm_boxes(anchors, (1024, 1024)))
fg = f32(rng.uniform(0, 1, len(anchors)))
deltas = f32(rng.normal(0, 1, (len(anchors), 4)))
layer = matterport_proposal_layer(1000)
inputs = [tf.constant(np.stack([1 - fg, fg], axis=1)[None]), tf.constant(deltas[None]), tf.constant(anchors[None])]
graph = tf.function(layer.call)
io["layer/fg_probs"], io["layer/deltas"] = fg, deltas
io["layer/rois_yxyx"] = f32(graph(inputs).numpy()[0])
timings["matterport_proposal_layer_1024"] = {"matterport": median_ms(lambda: graph(inputs).numpy())}

save_file({k: np.ascontiguousarray(v) for k, v in io.items()}, os.path.join(out_dir, "proposals_io.safetensors"))
with open(os.path.join(out_dir, "proposals_peers.json"), "w") as f:
    json.dump({"threads": 2, "torch": torch.__version__, "tensorflow": tf.__version__, "ms": timings}, f, indent=2)
print(json.dumps(timings, indent=2))
