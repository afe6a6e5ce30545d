"""A PNG contact sheet of sampled dataset frames, each captioned with its actions and speed."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from driving import atomic
from driving.data.format import Dataset, DatasetError

_CAPTION = 34  # px of caption under each tile


def _bar(tile: np.ndarray, y: int, value: float, colour) -> None:
    """A centred horizontal bar: value in [-1, 1] -> left/right of the centre line."""
    w = tile.shape[1]
    cx = w // 2
    end = int(round(cx + np.clip(value, -1, 1) * (w // 2 - 2)))
    cv2.rectangle(tile, (min(cx, end), y), (max(cx, end), y + 3), colour, -1)
    cv2.line(tile, (cx, y - 1), (cx, y + 4), (255, 255, 255), 1)


def _tile(frame: np.ndarray, label: np.ndarray, executed: np.ndarray, speed: float, title: str,
          scale: int) -> np.ndarray:
    img = frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3:
        img = img[..., ::-1]  # RGB frames -> BGR for OpenCV
    img = cv2.resize(img, (img.shape[1] * scale, img.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    w = max(img.shape[1], 150)
    tile = np.zeros((img.shape[0] + _CAPTION, w, 3), np.uint8)
    x0 = (w - img.shape[1]) // 2
    tile[: img.shape[0], x0: x0 + img.shape[1]] = img
    y = img.shape[0]
    font = cv2.FONT_HERSHEY_PLAIN
    cv2.putText(tile, title, (2, y + 10), font, 0.8, (200, 200, 200), 1, cv2.LINE_AA)
    cv2.putText(tile, f"s {label[0]:+.2f} a {label[1]:+.2f} {speed:4.1f}m/s", (2, y + 21), font, 0.75,
                (255, 255, 255), 1, cv2.LINE_AA)
    _bar(tile, y + 25, label[0], (0, 200, 255))  # expert steer (orange)
    _bar(tile, y + 30, executed[0], (255, 160, 0))  # executed steer (blue)
    return tile


def contact_sheet(ds: Dataset, n: int = 24, columns: int = 8, seed: int = 0, scale: int = 2) -> np.ndarray:
    """Frames sampled evenly over episodes, deterministic for a given seed."""
    if ds.frames == 0:
        raise DatasetError(f"dataset {ds.root} has no frames: collect some episodes first")
    rng = np.random.default_rng(seed)
    lengths = np.array([r["length"] for r in ds.index])
    eps = np.sort(rng.choice(len(ds), size=n, replace=True, p=lengths / lengths.sum()))
    tiles, cache = [], {}
    for e in eps:
        if e not in cache:
            cache = {e: ds.episode(int(e), ("frames", "expert_action", "action", "speed"))}
        ep = cache[e]
        t = int(rng.integers(len(ep["frames"])))
        row = ds.index[e]
        title = f"ep{row['episode']} t{t} {row['outcome']}"
        tiles.append(_tile(ep["frames"][t], ep["expert_action"][t], ep["action"][t], float(ep["speed"][t]),
                           title, scale))
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * (h + 4) + 4, min(columns, len(tiles)) * (w + 4) + 4, 3), 40, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[4 + r * (h + 4): 4 + r * (h + 4) + h, 4 + c * (w + 4): 4 + c * (w + 4) + w] = t
    return sheet


def write_contact_sheet(ds: Dataset, out: Path, **kw) -> Path:
    sheet = contact_sheet(ds, **kw)
    ok, buf = cv2.imencode(".png", sheet)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    atomic.write_bytes(Path(out), buf.tobytes())
    return Path(out)
