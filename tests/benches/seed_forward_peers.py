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


class TorchSeed(nn.Module):
    """Seed 000 in PyTorch: same layers, NCHW, BN eps 1e-3, linear shared head conv."""

    def __init__(self, blocks=(3, 6, 4), k=9):
        super().__init__()
        self.convs, self.bns = nn.ModuleList(), nn.ModuleList()  # creation order, as Keras
        def conv(ci, co, ks, s=1):
            self.convs.append(nn.Conv2d(ci, co, ks, s, ks // 2))
            return self.convs[-1]

        def bn(c):
            self.bns.append(nn.BatchNorm2d(c, eps=1e-3))
            return self.bns[-1]

        self.stem = (conv(3, 64, 3), bn(64))
        self.blocks, c_in, f = [], 64, 64
        for n in blocks:
            for b in range(n):
                s = 2 if b == 0 else 1
                layers = [(conv(c_in, f, 1, s), bn(f)), (conv(f, f, 3), bn(f)), (conv(f, 4 * f, 1), bn(4 * f))]
                short = (conv(c_in, 4 * f, 1, s), bn(4 * f)) if b == 0 else None
                self.blocks.append((layers, short))
                c_in = 4 * f
            f *= 2
        self.shared, self.cls, self.bbox = conv(c_in, 256, 3), conv(256, 2 * k, 1), conv(256, 4 * k, 1)

    def forward(self, x):
        relu = torch.relu
        x = relu(self.stem[1](self.stem[0](x)))
        for (a, b, c), short in self.blocks:
            y = relu(a[1](a[0](x)))
            y = relu(b[1](b[0](y)))
            y = c[1](c[0](y))
            x = relu(y + (short[1](short[0](x)) if short else x))
        s = self.shared(x)
        n = x.shape[0]
        logits = self.cls(s).permute(0, 2, 3, 1).reshape(n, -1, 2)
        return logits, torch.softmax(logits, -1), self.bbox(s).permute(0, 2, 3, 1).reshape(n, -1, 4)


net = TorchSeed().eval()
kconvs = creation_order([l for l in model.layers if isinstance(l, KL.Conv2D)])
kbns = creation_order([l for l in model.layers if isinstance(l, KL.BatchNormalization)])
with torch.no_grad():
    for c, kl in zip(net.convs, kconvs):
        w, b = kl.get_weights()
        c.weight.copy_(torch.from_numpy(w.transpose(3, 2, 0, 1).copy()))
        c.bias.copy_(torch.from_numpy(b))
    for m, kl in zip(net.bns, kbns):
        g, beta, mean, var = kl.get_weights()
        m.weight.copy_(torch.from_numpy(g)); m.bias.copy_(torch.from_numpy(beta))
        m.running_mean.copy_(torch.from_numpy(mean)); m.running_var.copy_(torch.from_numpy(var))
timages = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
with torch.no_grad():
    tl, _, td = net(timages)
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
