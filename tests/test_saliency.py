"""Saliency maps (driving/saliency.py) on toy networks where the answer is known."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from driving.models import InputSpec, ModelConfig, build_model
from driving.saliency import conv_blocks, saliency

H, W = 128, 64  # PilotNet runs unpadded at this size


def _model(name="pilotnet", h=H, w=W, channels=1, seed=0, stack=2):
    torch.manual_seed(seed)
    return build_model(name, ModelConfig(stack=stack, dropout=0.0), InputSpec(h, w, channels)).eval()


def _patch_frames(b=1, k=2, h=H, w=W, box=(30, 46, 20, 36), value=255, rgb=False):
    shape = (b, k, h, w, 3) if rgb else (b, k, h, w)
    f = np.zeros(shape, np.uint8)
    r0, r1, c0, c1 = box
    f[:, :, r0:r1, c0:c1] = value
    return f


def _make_monotone(model):
    """Non-negative weights, zero biases: every activation and the output grow with the input, and
    pixels outside the content's receptive field give exactly zero."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = m.weight.abs_()  # each output: a weighted mean of its inputs (gain 1)
                w.div_(w.flatten(1).sum(dim=1).clamp_min(1e-12).view(-1, *[1] * (w.dim() - 1)))
                if m.bias is not None:
                    m.bias.zero_()
    return model


def _in_box(idx, box, margin=3):
    r, c = idx
    r0, r1, c0, c1 = box
    return r0 - margin <= r < r1 + margin and c0 - margin <= c < c1 + margin


@pytest.mark.parametrize("name", ["pilotnet", "resnet18"])
def test_vbp_peaks_on_the_only_content(name):
    box = (30, 46, 20, 36)
    for seed in range(2):
        s = saliency(_model(name, seed=seed), _patch_frames(box=box), np.array([20.0]), "vbp")[0]
        assert s.shape == (H, W) and s.dtype == np.float32
        assert _in_box(np.unravel_index(s.argmax(), s.shape), box)
        inside = s[box[0]:box[1], box[2]:box[3]].mean()
        assert inside > 5 * s.mean() and inside > 0.3


@pytest.mark.parametrize("name", ["pilotnet", "resnet18"])
@pytest.mark.parametrize("method,output", [("vbp", 0), ("gradcam", 0), ("gradcam", 1)])
def test_map_peaks_where_the_input_matters(name, method, output):
    box = (70, 86, 8, 24)
    model = _make_monotone(_model(name))
    s = saliency(model, _patch_frames(box=box), np.array([0.0]), method, output=output)[0]
    assert s.max() == pytest.approx(1.0) and s.min() >= 0.0
    r0, r1, c0, c1 = box
    peak = s >= 0.9  # the argmax region (Grad-CAM's coarse maps have plateaus)
    assert peak[r0:r1, c0:c1].any()
    far = s[:40]  # rows far above the patch
    if method == "vbp":  # exact: outside every receptive field that touches the patch
        assert _in_box(np.unravel_index(s.argmax(), s.shape), box)
        assert far.max() < 0.05
    else:  # a deep layer's cells see far: only ask for a clear contrast
        assert s[r0:r1, c0:c1].mean() > 4 * far.mean()


def test_blank_input_gives_a_flat_map():
    model = _model("pilotnet")
    speed = np.array([20.0, 20.0])
    for value in (0, 120):
        frames = np.full((2, 2, H, W), value, np.uint8)
        for method in ("vbp", "gradcam"):
            s = saliency(model, frames, speed, method)
            assert np.ptp(s) < 1e-6, (value, method)
    s = saliency(_model("resnet18"), np.zeros((1, 2, H, W), np.uint8), np.array([0.0]), "vbp")
    assert np.ptp(s) < 1e-6


def test_upsampling_follows_receptive_field_centres():
    """Centre-tap kernels pass one input pixel straight through every unpadded strided conv; the
    mask must come back to exactly that pixel (a plain resize would shift it by several pixels)."""
    model = _model("pilotnet")
    with torch.no_grad():
        for m in model.backbone.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.zero_()
                m.bias.zero_()
                k = m.kernel_size[0] // 2
                m.weight[:, 0, k, k] = 1.0
    blocks = conv_blocks(model.backbone)
    strides = [tuple(s) for _, s, _ in blocks]
    offsets = [tuple(o) for _, _, o in blocks]
    assert strides == [(2, 2), (4, 4), (8, 8), (8, 8), (8, 8)]
    assert offsets == [(2, 2), (6, 6), (14, 14), (22, 22), (30, 30)]
    r, c = 8 * 5 + 30, 30  # on the deepest block's grid: row 5, column 0
    frames = np.zeros((1, 2, H, W), np.uint8)
    frames[0, :, r, c] = 255
    s = saliency(model, frames, np.array([0.0]), "vbp")[0]
    assert np.unravel_index(s.argmax(), s.shape) == (r, c)


def test_resnet_blocks_and_rgb_batches():
    model = _model("resnet18", h=64, w=48, channels=3)
    blocks = conv_blocks(model.backbone)
    assert [tuple(s) for _, s, _ in blocks] == [(2, 2), (4, 4), (8, 8), (16, 16), (32, 32)]
    assert all(tuple(o) == (0, 0) for _, _, o in blocks)
    frames = np.random.default_rng(0).integers(0, 255, (3, 2, 64, 48, 3), dtype=np.uint8)
    model.train()
    for method in ("vbp", "gradcam"):
        s = saliency(model, frames, np.array([1.0, 2.0, 3.0]), method)
        assert s.shape == (3, 64, 48) and s.min() >= 0 and s.max() <= 1
    assert model.training  # mode restored
    assert all(not m._forward_hooks for m in model.modules())  # hooks removed


def test_small_padded_pilotnet_and_bad_arguments():
    model = _model("pilotnet", h=48, w=32)  # too small for unpadded convs: 'same' padding
    s = saliency(model, _patch_frames(h=48, w=32, box=(10, 18, 8, 16)), np.array([5.0]), "vbp")
    assert s.shape == (1, 48, 32) and _in_box(np.unravel_index(s[0].argmax(), s[0].shape), (10, 18, 8, 16))
    with pytest.raises(ValueError, match="unknown saliency method"):
        saliency(model, _patch_frames(h=48, w=32), None, "lime")
    with pytest.raises(ValueError, match="uint8"):
        saliency(model, np.zeros((1, 2, 48, 32), np.float32), None)
    with pytest.raises(ValueError, match="output"):
        saliency(model, _patch_frames(h=48, w=32), None, "gradcam", output=2)
