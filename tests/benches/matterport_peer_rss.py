"""Peak resident memory of one peer running the Matterport 1024² row alone in this process.

Run by tests/benches/matterport_peers.py as `python matterport_peer_rss.py keras_tf|torchvision`
(threads pinned to 2): builds that peer's model as the timing script does, runs it three times on
the same hashed 1024² image, and prints `{"peer": ..., "peak_rss_mb": ...}` — the peak RSS of a
process that imported only that peer's framework, so that the number is what a user running it
would see (the timing script holds both frameworks and both models at once).
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))
SIDE = 1024
peer = sys.argv[1]

if peer == "torchvision":
    import torch
    import torchvision

    import numpy as np

    torch.set_num_threads(2)
    # The values do not change the memory; keras_seeds' `hashed` would import TensorFlow.
    image = np.random.default_rng(0).standard_normal((1, SIDE, SIDE, 3), dtype=np.float32)
    tv = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    timage = torch.from_numpy(image.transpose(0, 3, 1, 2).copy())
    image_list = torchvision.models.detection.image_list.ImageList(timage, [(SIDE, SIDE)])
    for _ in range(3):
        with torch.no_grad():
            tv.rpn(image_list, tv.backbone(timage))
elif peer == "keras_tf":
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    from keras_seeds import hashed  # noqa: E402
    from matterport_graph import hashed_resnet50_rpn  # noqa: E402
    from peers import matterport_proposal_layer  # noqa: E402
    from mrcnn import utils  # noqa: E402

    model = hashed_resnet50_rpn(SIDE)
    shapes = np.array([[SIDE // s, SIDE // s] for s in (4, 8, 16, 32, 64)])
    anchors = utils.generate_pyramid_anchors((32, 64, 128, 256, 512), [0.5, 1, 2], shapes, [4, 8, 16, 32, 64], 1)
    anchors = tf.constant(utils.norm_boxes(anchors, (SIDE, SIDE)).astype(np.float32)[None])
    layer = matterport_proposal_layer(1000)
    x = tf.constant(hashed((1, SIDE, SIDE, 3), 80, 2.0))

    @tf.function
    def keras_rpn(x):
        outs = model(x, training=False)
        return outs[5], outs[7], layer([outs[6], outs[7], anchors])

    for _ in range(3):
        [t.numpy() for t in keras_rpn(x)]
else:
    sys.exit(f"unknown peer {peer!r}: keras_tf or torchvision")

# `VmHWM` (KiB), this process image's own high-water mark: `ru_maxrss` would report the parent's
# peak instead (Linux carries it across fork and exec).
with open("/proc/self/status") as status:
    hwm_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"peer": peer, "peak_rss_mb": hwm_kb / 1024}))
