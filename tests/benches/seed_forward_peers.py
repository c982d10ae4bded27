"""Times seed 000's forward pass (64×64, batch 8, CPU) in Keras/TF and PyTorch, same weights.

Run by `cargo xtask bench seed_forward` (oracle virtualenv), threads pinned to 2 on both peers.
The Keras model is the notebook's code (tests/fixtures/keras_seeds.py) with hashed weights and BN
statistics; the PyTorch model is the same architecture with those weights copied over (HWIO → OIHW),
and its outputs are checked against Keras' before timing. Writes, under argv[1]:
  * seed_forward_io.safetensors  Keras' outputs for the hashed input (the Rust bench checks ours);
  * seed_forward_peers.json      median milliseconds per peer.
"""

import json
import os
import sys
import time

import torch  # before TensorFlow: the other order aborts in LLVM
import torch.nn as nn
import numpy as np
import tensorflow as tf
import tf_keras as keras
import tf_keras.layers as KL
from safetensors.numpy import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from keras_seeds import creation_order, hashed, res_net, rpn_net, set_weights  # noqa: E402
from peers import median_ms as _median_ms  # noqa: E402
from torch_seed import TorchSeed, copy_keras_weights  # noqa: E402


def median_ms(fn):
    return _median_ms(fn, min_runs=5, min_seconds=2.0)

torch.set_num_threads(2)
tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(2)
out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join("target", "bench")
os.makedirs(out_dir, exist_ok=True)




x_in = KL.Input((64, 64, 3))
model = keras.Model([x_in], list(rpn_net(res_net(x_in, [3, 6, 4]), 9)))
set_weights(model)
images = hashed((8, 64, 64, 3), 90, 2.0)
keras_call = tf.function(lambda x: model(x, training=False))
logits, probs, deltas = [t.numpy() for t in keras_call(tf.constant(images))]


net = TorchSeed((3, 6, 4)).eval()
copy_keras_weights(net, model)
timages = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
with torch.no_grad():
    tl, td = net(timages)
scale = np.abs(logits).max()
assert np.abs(tl.numpy() - logits).max() <= 1e-4 * scale, "PyTorch and Keras disagree"

save_file({"logits": logits, "deltas": deltas}, os.path.join(out_dir, "seed_forward_io.safetensors"))


def torch_forward():
    with torch.no_grad():
        net(timages)


timings = {"seed000_forward_64x64_b8": {
    "keras_tf": median_ms(lambda: [t.numpy() for t in keras_call(tf.constant(images))]),
    "pytorch": median_ms(torch_forward),
}}
with open(os.path.join(out_dir, "seed_forward_peers.json"), "w") as f:
    json.dump({"threads": 2, "torch": torch.__version__, "tensorflow": tf.__version__, "ms": timings}, f, indent=2)
print(json.dumps(timings, indent=2))
