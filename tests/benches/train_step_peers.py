"""Times one seed 001 training step (64×64, batch 20, CPU) in Keras/TF and PyTorch, same start.

Run by `cargo xtask bench train_step` (oracle virtualenv), threads pinned to 2 on both peers.
The step is seed 001's recipe: the notebook's model (tests/fixtures/keras_seeds.py) in training
mode (BatchNorm on batch statistics, moving averages with momentum 0.99), the notebook's
`rpn_class_loss` + `rpn_bbox_loss` (as in tests/fixtures/gen_loss.py), and
`SGD(lr=0.0005, momentum=0.9)`. Weights and BN statistics are the shared integer hash; images and
targets are hashed too (about 129 positive and 129 negative anchors per image, 256 target rows).
PyTorch runs the same graph with the weights copied over (HWIO → OIHW), torch's BN momentum 0.01
and SGD momentum (equal to Keras' for a constant learning rate); its first two losses are checked
against Keras' before timing. Writes, under argv[1]:
  * train_step_io.safetensors  inputs, targets and Keras' losses at steps 1 and 2 (the Rust bench
    checks ours against them);
  * train_step_peers.json      median milliseconds per step per peer.
"""

import json
import os
import sys

import torch  # before TensorFlow: the other order aborts in LLVM
import torch.nn as nn

# torch.optim's first step imports triton, whose LLVM clashes with TensorFlow's once TF is
# loaded ("Option … registered more than once"); the CPU step does not need it.
sys.modules["triton"] = None
import numpy as np
import tensorflow as tf
import tf_keras as keras
import tf_keras.backend as K
import tf_keras.layers as KL
from safetensors.numpy import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from keras_seeds import creation_order, hashed, res_net, rpn_net, set_weights, unit  # noqa: E402
from peers import median_ms  # noqa: E402

torch.set_num_threads(2)
tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(2)
out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join("target", "bench")
os.makedirs(out_dir, exist_ok=True)

B, SIDE, K_ANCHORS, ROWS, LR, MOMENTUM = 20, 64, 9, 256, 5e-4, 0.9
A = (SIDE // 2) * (SIDE // 2) * K_ANCHORS

images = hashed((B, SIDE, SIDE, 3), 91, 2.0)
u = unit(B * A, 92).reshape(B, A)
rpn_match = np.where(u < 0.014, 1, np.where(u < 0.028, -1, 0)).astype(np.int32)
assert (rpn_match == 1).sum(axis=1).max() <= ROWS
rpn_bbox = hashed((B, ROWS, 4), 93, 2.0)


# ------------------------------------------------------------------ Keras: the notebook's losses
def rpn_class_loss(input_rpn_match, rpn_class_logits):
    input_rpn_match = tf.squeeze(input_rpn_match, -1)
    indices = tf.where(K.not_equal(input_rpn_match, 0))
    anchor_class = K.cast(K.equal(input_rpn_match, 1), tf.int32)
    anchor_class = tf.gather_nd(anchor_class, indices)
    rpn_class_logits = tf.gather_nd(rpn_class_logits, indices)
    loss = K.sparse_categorical_crossentropy(target=anchor_class, output=rpn_class_logits, from_logits=True)
    return K.switch(tf.size(loss) > 0, K.mean(loss), tf.constant(0.0))


def batch_pack(x, counts, num_rows):
    return tf.concat([x[i, :counts[i]] for i in range(num_rows)], axis=0)


def rpn_bbox_loss(input_rpn_bbox, input_rpn_match, rpn_bbox, batch):
    input_rpn_match = tf.squeeze(input_rpn_match, -1)
    indices = tf.where(K.equal(input_rpn_match, 1))
    rpn_bbox = tf.gather_nd(rpn_bbox, indices)
    batch_counts = K.sum(K.cast(K.equal(input_rpn_match, 1), tf.int32), axis=1)
    input_rpn_bbox = batch_pack(input_rpn_bbox, batch_counts, batch)
    diff = K.abs(input_rpn_bbox - rpn_bbox)
    less_than_one = K.cast(K.less(diff, 1.0), "float32")
    loss = 0.5 * less_than_one * diff ** 2 + (1 - less_than_one) * (diff - 0.5)
    return K.switch(tf.size(loss) > 0, K.mean(loss), tf.constant(0.0))


x_in = KL.Input((SIDE, SIDE, 3))
model = keras.Model([x_in], list(rpn_net(res_net(x_in, [2]), K_ANCHORS)))
set_weights(model)
# jit_compile=False: XLA's LLVM and torch's cannot live in one process (LLVM option clash).
optimizer = keras.optimizers.SGD(learning_rate=LR, momentum=MOMENTUM, jit_compile=False)
k_images, k_match, k_bbox = tf.constant(images), tf.constant(rpn_match[..., None]), tf.constant(rpn_bbox)


@tf.function
def keras_step():
    with tf.GradientTape() as tape:
        logits, _, deltas = model(k_images, training=True)
        cls = rpn_class_loss(k_match, logits)
        box = rpn_bbox_loss(k_bbox, k_match, deltas, B)
        total = cls + box
    grads = tape.gradient(total, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return cls, box


# The starting weights for PyTorch, read before Keras trains.
kconvs = [l.get_weights() for l in creation_order([l for l in model.layers if isinstance(l, KL.Conv2D)])]
kbns = [l.get_weights() for l in creation_order([l for l in model.layers if isinstance(l, KL.BatchNormalization)])]
keras_losses = np.array([[float(v) for v in keras_step()] for _ in range(2)], dtype=np.float32)


# ------------------------------------------------------------------ PyTorch: the same step
class TorchSeed(nn.Module):
    """Seed 000/001 in PyTorch: same layers, NCHW, BN eps 1e-3 (momentum 0.01 = Keras' 0.99)."""

    def __init__(self, blocks, k=K_ANCHORS):
        super().__init__()
        self.convs, self.bns = nn.ModuleList(), nn.ModuleList()  # creation order, as Keras

        def conv(ci, co, ks, s=1):
            self.convs.append(nn.Conv2d(ci, co, ks, s, ks // 2))
            return self.convs[-1]

        def bn(c):
            self.bns.append(nn.BatchNorm2d(c, eps=1e-3, momentum=0.01))
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
        return self.cls(s).permute(0, 2, 3, 1).reshape(n, -1, 2), self.bbox(s).permute(0, 2, 3, 1).reshape(n, -1, 4)


net = TorchSeed((2,)).train()
with torch.no_grad():
    for c, (w, b) in zip(net.convs, kconvs):
        c.weight.copy_(torch.from_numpy(w.transpose(3, 2, 0, 1).copy()))
        c.bias.copy_(torch.from_numpy(b))
    for m, (g, beta, mean, var) in zip(net.bns, kbns):
        m.weight.copy_(torch.from_numpy(g)); m.bias.copy_(torch.from_numpy(beta))
        m.running_mean.copy_(torch.from_numpy(mean)); m.running_var.copy_(torch.from_numpy(var))
t_images = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
t_match = torch.from_numpy(rpn_match.astype(np.int64))
t_bbox = torch.from_numpy(rpn_bbox)
positives = [int(c) for c in (rpn_match == 1).sum(axis=1)]
t_target = torch.cat([t_bbox[i, :positives[i]] for i in range(B)])
t_opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)


def torch_step():
    logits, deltas = net(t_images)
    labelled = t_match != 0
    cls = nn.functional.cross_entropy(logits[labelled], (t_match[labelled] == 1).long())
    box = nn.functional.smooth_l1_loss(deltas[t_match == 1], t_target, beta=1.0)
    t_opt.zero_grad()
    (cls + box).backward()
    t_opt.step()
    return float(cls.detach()), float(box.detach())


torch_losses = np.array([torch_step() for _ in range(2)], dtype=np.float32)
assert np.allclose(torch_losses, keras_losses, rtol=1e-4, atol=1e-5), (torch_losses, keras_losses)

save_file({
    "images": images, "rpn_match": rpn_match.astype(np.float32), "rpn_bbox": rpn_bbox,
    "keras_losses": keras_losses,
}, os.path.join(out_dir, "train_step_io.safetensors"))

timings = {"seed001_train_step_64x64_b20": {
    "keras_tf": median_ms(lambda: [v.numpy() for v in keras_step()], min_runs=5, min_seconds=3.0),
    "pytorch": median_ms(torch_step, min_runs=5, min_seconds=3.0),
}}
with open(os.path.join(out_dir, "train_step_peers.json"), "w") as f:
    json.dump({"threads": 2, "torch": torch.__version__, "tensorflow": tf.__version__,
               "keras_losses_step1_step2": keras_losses.tolist(), "ms": timings}, f, indent=2)
print(json.dumps(timings, indent=2))
