"""Times torchvision's Faster R-CNN RPN on one 800×1216 image (CPU, batch 1): the whole first
stage as torchvision runs it — `GeneralizedRCNNTransform`, ResNet-50-FPN, `RPNHead`, anchors,
`filter_proposals` — for `cargo xtask bench torchvision`, threads pinned to 2.

The model is `fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)` with seeded random
weights and BatchNorm statistics (its head rescaled so that proposals spread over the image, as
in tests/fixtures/gen_torchvision.py). Writes, under argv[1]: torchvision_r50.pth (its state
dict, which the Rust bench ports with `rpn_torch::port`), torchvision_io.safetensors (the image
and torchvision's proposals and scores in original pixels) and torchvision_peers.json (median ms).

ONNX Runtime and OpenVINO (f32 pinned) run the network alone (ResNet-50-FPN + RPNHead on the
transformed tensor), exported by `torch.onnx.export` to torchvision_r50_rpn.onnx; their outputs
are checked against torch's (1e-4 of scale) before they are timed.
"""

import json
import os
import sys

import numpy as np
import torch
import torchvision
from safetensors.numpy import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from peers import assert_close, median_ms, onnxruntime_session, openvino_compiled, randomize_torch_model  # noqa: E402

torch.set_num_threads(2)
torch.manual_seed(0)
out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join("target", "bench")
os.makedirs(out_dir, exist_ok=True)
H, W = 800, 1216

model = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
randomize_torch_model(model)

rng = np.random.default_rng(3)
y, x = np.mgrid[0:H, 0:W]
picture = np.stack([x * 255 // (W - 1), y * 255 // (H - 1), (x + y) % 256], -1).astype(np.uint8)
for _ in range(8):
    y0, x0 = rng.integers(0, H - 200), rng.integers(0, W - 200)
    picture[y0 : y0 + rng.integers(40, 200), x0 : x0 + rng.integers(40, 200)] = rng.integers(0, 256, 3)
image = torch.from_numpy(picture).permute(2, 0, 1).float() / 255.0

with torch.no_grad():
    images, _ = model.transform([image])
    features = list(model.backbone(images.tensors).values())
    objectness, deltas = model.rpn.head(features)
    obj = torch.cat([o.flatten() for o in objectness])
    dlt = torch.cat([d.flatten() for d in deltas])
    model.rpn.head.cls_logits.weight.mul_(2.0 / obj.std())
    model.rpn.head.cls_logits.bias.zero_()
    model.rpn.head.bbox_pred.weight.mul_(0.2 / dlt.std())
    model.rpn.head.bbox_pred.bias.zero_()
torch.save(model.state_dict(), os.path.join(out_dir, "torchvision_r50.pth"))


def torchvision_rpn():
    """The first stage as `GeneralizedRCNN.forward` runs it, boxes back in original pixels."""
    with torch.no_grad():
        images, _ = model.transform([image])
        features = model.backbone(images.tensors)
        boxes, _ = model.rpn(images, features)
        return torchvision.models.detection.transform.resize_boxes(boxes[0], images.image_sizes[0], (H, W))


with torch.no_grad():
    images, _ = model.transform([image])
    features = model.backbone(images.tensors)
    feats = list(features.values())
    objectness, deltas = model.rpn.head(feats)
    anchors = model.rpn.anchor_generator(images, feats)
    per_level = [o[0].numel() for o in objectness]
    flat_obj, flat_deltas = torchvision.models.detection.rpn.concat_box_prediction_layers(objectness, deltas)
    proposals = model.rpn.box_coder.decode(flat_deltas, anchors).view(1, -1, 4)
    boxes, scores = model.rpn.filter_proposals(proposals, flat_obj, images.image_sizes, per_level)
    original = torchvision.models.detection.transform.resize_boxes(boxes[0], images.image_sizes[0], (H, W))
save_file(
    {"image": picture.astype(np.float32), "boxes": original.numpy(), "scores": scores[0].numpy()},
    os.path.join(out_dir, "torchvision_io.safetensors"),
)



class Network(torch.nn.Module):
    """ResNet-50-FPN + RPNHead on the transformed image tensor: what ONNX Runtime and OpenVINO
    run (the transform, anchors and `filter_proposals` stay in Python for them, so their rows
    time less work than ours and torchvision's)."""

    def __init__(self, detector):
        super().__init__()
        self.detector = detector

    def forward(self, x):
        objectness, deltas = self.detector.rpn.head(list(self.detector.backbone(x).values()))
        return tuple(objectness) + tuple(deltas)


network = Network(model).eval()
tensor = images.tensors
with torch.no_grad():
    network_out = [t.numpy() for t in network(tensor)]
onnx_path = os.path.join(out_dir, "torchvision_r50_rpn.onnx")
torch.onnx.export(network, (tensor,), onnx_path, dynamo=False, opset_version=17)
session = onnxruntime_session(onnx_path)
feed = {session.get_inputs()[0].name: tensor.numpy()}
compiled = openvino_compiled(onnx_path, "f32")
for name, run in (("onnxruntime", lambda: session.run(None, feed)), ("openvino_f32", lambda: compiled(feed))):
    got = run()
    for i, want in enumerate(network_out):
        assert_close(f"{name} output {i}", got[i], want)

timings = {
    "rpn_800x1216": {
        "torchvision": median_ms(torchvision_rpn, min_runs=3, min_seconds=5.0),
        "onnxruntime": median_ms(lambda: session.run(None, feed), min_runs=3, min_seconds=5.0),
        "openvino_f32": median_ms(lambda: compiled(feed), min_runs=3, min_seconds=5.0),
    }
}
with open(os.path.join(out_dir, "torchvision_peers.json"), "w") as f:
    json.dump({"threads": 2, "torch": torch.__version__, "torchvision": torchvision.__version__, "ms": timings}, f, indent=2)
print(json.dumps(timings, indent=2))
