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
import tf_keras.layers as KL
from safetensors.numpy import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from keras_seeds import (  # noqa: E402
    creation_order, hashed, res_net, rpn_bbox_loss, rpn_class_loss, rpn_net, set_weights, unit,
)
from torch_seed import TorchSeed, copy_weights  # noqa: E402
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
net = TorchSeed((2,)).train()
copy_weights(net, kconvs, kbns)
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
