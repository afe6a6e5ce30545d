"""Where in the frame does the policy look? Saliency maps for `driving.models.base.Policy`.

    saliency(model, frames_uint8 (B, K, H, W[, C]), speed (B,), method="vbp") -> (B, H, W) in [0, 1]

VisualBackProp ("vbp", Bojarski et al. 2017, the PilotNet authors' own tool): average the
(rectified) feature maps of every conv block over channels, then, from the deepest block up, bring
the running mask to the next shallower block's grid, multiply it with that block's averaged map,
and finally bring it to the input grid. Needs one forward pass, no gradients, and follows the
ELU/ReLU outputs that PilotNet and ResNet-18 both produce.

Grad-CAM ("gradcam", Selvaraju et al. 2017) for one output (0 = steer, 1 = accel): the channels of
a deep conv block (by default the deepest still >= 3 px on each side) weighted by the spatial mean of the output's gradient, rectified. The target
is the output times its own sign, so the map shows what pushes the action the way it was taken
(a left turn and a right turn are both explained).

Grids. The "upsampling" between blocks is exact, not a blind resize: every conv or pooling layer
maps output pixel j to the input pixel at the centre of its receptive field, x = s*j + (k-1)/2*d - p.
Composing these gives, for each block, input coordinate = S*j + O, and maps are resampled
bilinearly at those positions (edge values held). For PilotNet's unpadded strided convolutions the
receptive-field centres do not sit on a scaled grid (a plain resize would shift the mask by
pixels); for ResNet's 'same'-padded ones it reduces to x = S*j. A constant map stays constant, so
a blank input gives a flat (all-zero) map and no checkerboard appears.

Blocks are found by walking the backbone's direct children in forward order (true for
nn.Sequential and torchvision's ResNet): an activation module (ELU, ReLU, ...) or a container
holding convolutions (a ResNet `layerN`) ends a block; walking stops at the first module that
pools to a vector (AdaptiveAvgPool, Flatten).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

METHODS = ("vbp", "gradcam")
_ACTIVATIONS = (nn.ReLU, nn.ELU, nn.LeakyReLU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.PReLU, nn.ReLU6)
_GEOMETRIC = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
_GRADCAM_MIN_SIZE = 3  # Grad-CAM's default block: the deepest whose map is at least this on each side
_FLAT_EPS = 1e-6  # relative range below which a map counts as flat (-> all zeros)


# -- geometry: input coordinate of a feature-map pixel = S * j + O (per axis) ---------------------
def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _layer_geometry(m: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """(stride, offset) of one conv/pool layer, per axis (rows, cols)."""
    k, s, p = _pair(m.kernel_size), _pair(m.stride), _pair(m.padding)
    d = _pair(getattr(m, "dilation", 1))
    if isinstance(p[0], str):  # padding="same"/"valid" (stride 1 only for "same")
        p = tuple(((kk - 1) * dd) // 2 if p[0] == "same" else 0 for kk, dd in zip(k, d))
    stride = np.array(s, dtype=np.float64)
    offset = np.array([(kk - 1) / 2 * dd - pp for kk, dd, pp in zip(k, d, p)], dtype=np.float64)
    return stride, offset


def _geometry(m: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """Composite (stride, offset) of a module along its main path (a residual's shortcut is skipped)."""
    if isinstance(m, _GEOMETRIC):
        return _layer_geometry(m)
    stride, offset = np.ones(2), np.zeros(2)
    for name, child in m.named_children():
        if name == "downsample":  # ResNet shortcut: parallel to the main path, same geometry
            continue
        s, o = _geometry(child)
        stride, offset = stride * s, stride * o + offset
    return stride, offset


def _contains_conv(m: nn.Module) -> bool:
    return any(isinstance(x, nn.Conv2d) for x in m.modules())


def conv_blocks(backbone: nn.Module) -> list[tuple[nn.Module, np.ndarray, np.ndarray]]:
    """The modules whose outputs are the backbone's conv-block feature maps, shallow to deep, each
    with the (stride, offset) that maps its output grid to input pixels."""
    blocks = []
    stride, offset = np.ones(2), np.zeros(2)
    for child in backbone.children():
        if isinstance(child, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Linear)):
            break
        s, o = _geometry(child)
        stride, offset = stride * s, stride * o + offset
        if isinstance(child, _ACTIVATIONS) or (len(list(child.children())) and _contains_conv(child)):
            blocks.append((child, stride.copy(), offset.copy()))
    if not blocks:
        raise ValueError(f"no conv blocks found in backbone {type(backbone).__name__}: saliency needs "
                         "a backbone of convolutions followed by activations (or ResNet layers)")
    return blocks


def _resample(m: torch.Tensor, src: tuple, dst: tuple, size: tuple) -> torch.Tensor:
    """Map m (B, h, w) on grid `src` = (stride, offset) onto a (size) grid `dst`: bilinear, edges held."""
    (s_src, o_src), (s_dst, o_dst) = src, dst
    axes = []
    for a, n_out in enumerate(size):
        x = s_dst[a] * np.arange(n_out) + o_dst[a]  # input coordinates of the target pixels
        j = (x - o_src[a]) / s_src[a]  # ... in source pixel units
        n_in = m.shape[1 + a]
        g = 2.0 * j / (n_in - 1) - 1.0 if n_in > 1 else np.zeros_like(j)
        axes.append(torch.as_tensor(g, dtype=m.dtype, device=m.device))
    gy, gx = torch.meshgrid(axes[0], axes[1], indexing="ij")
    grid = torch.stack([gx, gy], dim=-1).expand(m.shape[0], -1, -1, -1)
    return F.grid_sample(m[:, None], grid, mode="bilinear", padding_mode="border", align_corners=True)[:, 0]


def _normalise(m: torch.Tensor) -> torch.Tensor:
    """Per-sample min-max to [0, 1]; a flat map (nothing stands out) becomes all zeros."""
    flat = m.flatten(1)
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    rng = hi - lo
    ok = rng > _FLAT_EPS * torch.maximum(hi.abs(), lo.abs()).clamp_min(1e-12)
    out = (m - lo[:, None, None]) / rng.clamp_min(1e-12)[:, None, None]
    return torch.where(ok[:, None, None], out, torch.zeros_like(out)).clamp(0.0, 1.0)


# -- the methods -----------------------------------------------------------------------------------
def _features(model, x, speed, blocks, grad: bool):
    acts: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: acts.append(out)) for m, _, _ in blocks]
    try:
        with torch.set_grad_enabled(grad):
            action, _ = model(x, speed, normalised=True)
    finally:
        for h in hooks:
            h.remove()
    if len(acts) != len(blocks):
        raise RuntimeError(f"expected {len(blocks)} block outputs, hooks saw {len(acts)} (a block "
                           "module is called more than once per forward pass)")
    return action, acts


def _vbp(model, x, speed, blocks, size) -> torch.Tensor:
    _, acts = _features(model, x, speed, blocks, grad=False)
    # Positive part, then channel mean: for ReLU nets this is the paper's average; for ELU nets it
    # ignores the bounded negative side, which carries "feature absent".
    means = [a.detach().float().clamp_min(0).mean(dim=1) for a in acts]
    # Each map scaled to max 1 (per sample): the result is the same after normalisation, and a
    # product of many deep maps cannot overflow or underflow.
    means = [m / m.flatten(1).max(dim=1).values.clamp_min(1e-30)[:, None, None] for m in means]
    grids = [(s, o) for _, s, o in blocks]
    mask = means[-1]
    for i in range(len(means) - 2, -1, -1):
        mask = _resample(mask, grids[i + 1], grids[i], means[i].shape[1:]) * means[i]
    return _resample(mask, grids[0], (np.ones(2), np.zeros(2)), size)


def _gradcam(model, x, speed, blocks, size, output: int, layer: int | None) -> torch.Tensor:
    action, acts = _features(model, x, speed, blocks, grad=True)
    if layer is None:  # the deepest block that still resolves position along both axes
        layer = max([i for i, a in enumerate(acts) if min(a.shape[-2:]) >= _GRADCAM_MIN_SIZE], default=0)
    feat = acts[layer]
    target = action[:, output]
    target = (target * torch.sign(target.detach()).masked_fill(target.detach() == 0, 1.0)).sum()
    (grad,) = torch.autograd.grad(target, feat)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = (weights * feat).sum(dim=1).clamp_min(0).detach().float()
    _, s, o = blocks[layer]
    return _resample(cam, (s, o), (np.ones(2), np.zeros(2)), size)


def saliency(model, frames, speed=None, method: str = "vbp", output: int = 0,
             layer: int | None = None) -> np.ndarray:
    """Saliency of `model` (a driving Policy) for uint8 frames (B, K, H, W[, C]) and speeds (B,).

    Returns (B, H, W) float32 in [0, 1], one map per sample on the input's pixel grid (the same
    map for every frame of the stack). method: "vbp" (VisualBackProp) or "gradcam"; `output`
    (gradcam only) picks the action component: 0 steer, 1 accel; `layer` (gradcam only) indexes
    `conv_blocks(model.backbone)`, default the deepest block whose map is >= 3 pixels on each side
    (PilotNet's last block is 1 pixel wide at 128x64: it cannot say left from right).
    """
    if method not in METHODS:
        raise ValueError(f"unknown saliency method {method!r}: use one of {', '.join(METHODS)}")
    if output not in (0, 1):
        raise ValueError(f"output must be 0 (steer) or 1 (accel), got {output!r}")
    device = next(model.parameters()).device
    frames_t = torch.as_tensor(np.asarray(frames), device=device)
    if frames_t.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 (B, K, H, W[, C]), got {frames_t.dtype}")
    if frames_t.dim() not in (4, 5):
        raise ValueError(f"frames must be (B, K, H, W[, C]), got shape {tuple(frames_t.shape)}")
    b = frames_t.shape[0]
    speed_t = torch.zeros(b, device=device) if speed is None else \
        torch.as_tensor(np.asarray(speed, dtype=np.float32), device=device).reshape(b)
    blocks = conv_blocks(model.backbone)
    was_training = model.training
    model.eval()
    try:
        x = model.normalise(frames_t)
        size = tuple(x.shape[-2:])
        if method == "vbp":
            m = _vbp(model, x, speed_t, blocks, size)
        else:
            m = _gradcam(model, x, speed_t, blocks, size, output, layer)
    finally:
        model.train(was_training)
    return _normalise(m).cpu().numpy().astype(np.float32)


def heatmap(sal: np.ndarray, colormap: int | None = None) -> np.ndarray:
    """(H, W) map in [0, 1] -> (H, W, 3) uint8 RGB heat colours (OpenCV's 'inferno' by default)."""
    import cv2

    cmap = cv2.COLORMAP_INFERNO if colormap is None else colormap
    u8 = np.clip(np.asarray(sal, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(u8, cmap)[..., ::-1].copy()


__all__ = ["METHODS", "conv_blocks", "heatmap", "saliency"]
