"""Times Matterport's RPN at 1024² (CPU, batch 1): ResNet-50-FPN + RPN head + proposal layer.

Run by `cargo xtask bench matterport`, threads pinned to 2. Peers:
  * keras_tf: the graph of tests/fixtures/matterport_graph.py (Matterport's own `resnet_graph`
    and `build_rpn_model` from the installed mrcnn package + the FPN with its layer names),
    hashed weights, then Matterport's `ProposalLayer` (top 6000 → NMS 0.7 → 1000), in one
    `tf.function`; its outputs are written for the Rust bench to check ours against;
  * torchvision: `fasterrcnn_resnet50_fpn(weights=None)`'s transform-free backbone + RPN in eval
    mode on the same 1024² input (same depth and FPN, torchvision's own head and proposal
    settings: a timing reference, not the same graph, so its outputs are not compared).
  * onnxruntime, openvino_f32: the same Keras network (ResNet-50-FPN + RPN head, without the
    proposal layer: less work than ours) exported by tf2onnx, run by ONNX Runtime (2 threads,
    every graph optimisation) and OpenVINO (2 threads, latency hint, f32 pinned: its default is
    bf16 on AMX CPUs); their logits and deltas are checked against Keras' (1e-4 of scale) first.
Also the ResNet-50 body alone (C2…C5): Matterport's `resnet_graph` in the same Keras model
(its C5 is written for the Rust bench to check), and torchvision's `resnet50` up to `layer4`.
Each peer's peak resident memory is measured alone in a child process (matterport_peer_rss.py).
Writes, under argv[1]: matterport_io.safetensors (image, rpn_class_logits, rpn_bbox, rpn_rois, c5)
and matterport_peers.json (median ms).
"""

import json
import os
import subprocess
import sys

import torch  # before TensorFlow: the other order aborts in LLVM
import torchvision
import numpy as np
import tensorflow as tf
import tf_keras.layers as KL
import tf_keras.models as KM
from safetensors.numpy import save_file
import tf2onnx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from keras_seeds import hashed  # noqa: E402
from matterport_graph import hashed_resnet50_rpn  # noqa: E402
from peers import (assert_close, matterport_proposal_layer, median_ms, onnxruntime_session,  # noqa: E402
                   openvino_compiled)
from mrcnn import utils  # noqa: E402

torch.set_num_threads(2)
tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(2)
out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join("target", "bench")
os.makedirs(out_dir, exist_ok=True)
SIDE = 1024

model = hashed_resnet50_rpn(SIDE)
shapes = np.array([[SIDE // s, SIDE // s] for s in (4, 8, 16, 32, 64)])
anchors = utils.generate_pyramid_anchors((32, 64, 128, 256, 512), [0.5, 1, 2], shapes, [4, 8, 16, 32, 64], 1)
anchors = tf.constant(utils.norm_boxes(anchors, (SIDE, SIDE)).astype(np.float32)[None])
layer = matterport_proposal_layer(1000)
image = hashed((1, SIDE, SIDE, 3), 80, 2.0)
x = tf.constant(image)


@tf.function
def keras_rpn(x):
    outs = model(x, training=False)
    logits, probs, deltas = outs[5], outs[6], outs[7]
    return logits, deltas, layer([probs, deltas, anchors])


# The ResNet-50 body alone (C2…C5, Matterport's `res{2c,3d,4f,5c}_out`), same weights.
body = KM.Model(model.input, [model.get_layer(f"res{n}_out").output for n in ("2c", "3d", "4f", "5c")])


@tf.function
def keras_body(x):
    return body(x, training=False)


logits, deltas, rois = [t.numpy() for t in keras_rpn(x)]
c5 = keras_body(x)[3].numpy()
save_file({"image": image, "rpn_class_logits": logits, "rpn_bbox": deltas, "rpn_rois": rois,
           "c5": c5}, os.path.join(out_dir, "matterport_io.safetensors"))



@tf.function(input_signature=[tf.TensorSpec([1, SIDE, SIDE, 3], tf.float32, name="image")])
def keras_network(x):
    """ResNet-50-FPN + RPN head (logits, deltas): what ONNX Runtime and OpenVINO run."""
    outs = model(x, training=False)
    return outs[5], outs[7]


onnx_path = os.path.join(out_dir, "matterport_r50_fpn_rpn.onnx")
tf2onnx.convert.from_function(keras_network, input_signature=keras_network.input_signature, opset=17,
                              output_path=onnx_path)
session = onnxruntime_session(onnx_path)
feed = {session.get_inputs()[0].name: image}
compiled = openvino_compiled(onnx_path, "f32")
for name, run in (("onnxruntime", lambda: session.run(None, feed)), ("openvino_f32", lambda: compiled(feed))):
    got = run()
    assert_close(f"{name} rpn_class_logits", got[0], logits)
    assert_close(f"{name} rpn_bbox", got[1], deltas)

tv = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
timage = torch.from_numpy(image.transpose(0, 3, 1, 2).copy())
image_list = torchvision.models.detection.image_list.ImageList(timage, [(SIDE, SIDE)])


def torchvision_rpn():
    with torch.no_grad():
        features = tv.backbone(timage)
        tv.rpn(image_list, features)


tv_body = torchvision.models._utils.IntermediateLayerGetter(
    torchvision.models.resnet50(weights=None).eval(),
    {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"})


def torchvision_body():
    with torch.no_grad():
        tv_body(timage)


timings = {
    "resnet50_fpn_rpn_proposals_1024": {
        "keras_tf": median_ms(lambda: [t.numpy() for t in keras_rpn(x)], min_runs=3, min_seconds=5.0),
        "torchvision": median_ms(torchvision_rpn, min_runs=3, min_seconds=5.0),
        "onnxruntime": median_ms(lambda: session.run(None, feed), min_runs=3, min_seconds=5.0),
        "openvino_f32": median_ms(lambda: compiled(feed), min_runs=3, min_seconds=5.0),
    },
    "resnet50_body_1024": {
        "keras_tf": median_ms(lambda: [t.numpy() for t in keras_body(x)], min_runs=3, min_seconds=5.0),
        "torchvision": median_ms(torchvision_body, min_runs=3, min_seconds=5.0),
    },
}
# Peak memory of each peer alone, in a fresh process (this one holds both frameworks).
rss_script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "matterport_peer_rss.py")
peak_rss_mb = {}
for peer in ("keras_tf", "torchvision"):
    done = subprocess.run([sys.executable, rss_script, peer], capture_output=True, text=True, check=True)
    peak_rss_mb[peer] = json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"]
print("peer peak RSS (MB), each alone:", peak_rss_mb)
with open(os.path.join(out_dir, "matterport_peers.json"), "w") as f:
    json.dump({"threads": 2, "torch": torch.__version__, "tensorflow": tf.__version__, "ms": timings,
               "peak_rss_mb": peak_rss_mb}, f, indent=2)
print(json.dumps(timings, indent=2))
