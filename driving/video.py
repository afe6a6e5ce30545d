"""Rollout videos a person wants to watch: MP4 (H.264, yuv420p, plays in a browser).

    rollout = record_rollout(env, policy, seed, saliency_method="vbp")   # env has a scene_camera
    write_video(rollout, "runs/x/eval/videos/seed_3.mp4")
    video_for_dataset("data/highway", "data/highway/videos", episodes=[0, 1])

One video frame per SIMULATION substep, played at the simulation frequency: real time and smooth.
Each frame shows, left, the scene from a large north-up camera centred on the ego; right, the
frames the policy actually received (its stack, newest last, saliency as a heat map on the newest),
bars for steer and accel of the policy beside the expert's, the speed and the time. A crash turns
the border red with "CRASH" (held to the end); off-road steps get an orange border and "OFF ROAD".

Timing of what is shown. Frame k (k = 0 .. T*n, n substeps per policy step) shows the scene after
substep k. The camera frames and actions shown are those of the policy step being executed (the
policy decided on frames that are up to one step old: that lag is real). Speed, crash and off-road
are the env's per-step facts of the last completed step, so a crash is marked at the end of the
step in which it happened (at most n-1 substeps after the contact).

Encoding uses PyAV (FFmpeg with libx264 in its wheels); OpenCV's pip wheels cannot write H.264.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from driving import atomic
from driving.data.format import Dataset, DatasetError
from driving.envpool import build_env
from driving.errors import UserError
from driving.rollout import ReplayActor, check_same_episode, play_episode
from sim import CameraConfig, DrivingEnv
from sim.metrics import COLLISION_KINDS, collision_with

# The scene camera for people: north-up (world +x up, so highways run vertically), RGB, 72 m x 48 m
# of world, the ego a little below the centre: 43 m of road ahead, about what the policy sees.
SCENE_CAMERA = CameraConfig(height=480, width=320, metres_per_pixel=0.15, stack=1, rgb=True,
                            heading_up=False, ego_row=0.6)

# Colours (RGB).
POLICY_COLOUR = (80, 170, 255)
EXPERT_COLOUR = (90, 225, 120)
CRASH_COLOUR = (235, 40, 40)
OFFROAD_COLOUR = (255, 150, 0)
TEXT = (235, 235, 235)
DIM = (150, 150, 150)
PANEL_BG = (28, 30, 34)
FONT = cv2.FONT_HERSHEY_SIMPLEX
BORDER = 8  # px of the crash / off-road frame border


# -- recording -------------------------------------------------------------------------------------
def record_rollout(env: DrivingEnv, policy, seed: int, saliency_method: str | None = None,
                   saliency_output: int = 0, title: str | None = None, actions=None,
                   expect: dict | None = None) -> dict:
    """Run one episode of `policy` (batch-1 `act(obs)`) in `env` (built with a scene_camera).

    Returns a dict of arrays (T policy steps, n = substeps per step, N = 1 + T*n scene frames):
      scene (N, Hs, Ws, 3) uint8      the scene after every substep (frame 0: after reset)
      camera (T, K, H, W[, 3]) uint8  the frames the policy received at each step
      action, expert_action (T, 2)    policy's and expert's [steer, accel] (expert NaN if none)
      saliency (T, H, W) float32      map for the newest frame (only when a method is set and the
                                      policy has a `.model`)
      speed, crashed, on_road, on_route, time, progress (T+1,)  facts of the states 0..T
    and scalars: substeps, fps (= simulation frequency), seed, and what the frame's text says:
    title, camera_title, labels (of the two bar colours), saliency_method.
    `actions`: the episode's recorded actions, executed instead of asking the policy (so the video
    shows exactly the episode that was scored; the policy still gives the saliency). `expect`: the
    scored row; a re-simulation that ends otherwise raises EpisodeMismatch.
    """
    if env.scene_camera is None:
        raise ValueError("record_rollout needs an env built with scene_camera=... (e.g. "
                         "driving.video.SCENE_CAMERA): the video shows the scene at every substep")
    if saliency_method not in (None, "vbp", "gradcam"):
        raise ValueError(f"unknown saliency method {saliency_method!r}: use vbp, gradcam or None")
    model = getattr(policy, "model", None) if saliency_method else None
    if model is not None:
        from driving.saliency import saliency  # imports torch: only when needed
    stack = getattr(policy, "stack", None) or getattr(getattr(model, "cfg", None), "stack", None)
    scene, cameras, maps = [], [], []

    def seen(obs, info):  # every state visited, the last included
        scene.append(info["scene_frames"])
        cameras.append(obs["camera"])
        if model is not None:
            frames = obs["camera"][None, -stack:] if stack else obs["camera"][None]
            maps.append(saliency(model, frames, np.reshape(obs["speed"], 1), saliency_method,
                                 output=saliency_output)[0])

    what = f"{env.scenario.name} seed {seed}"
    rec = play_episode(env, policy if actions is None else ReplayActor(actions, what), seed, on_state=seen)
    if expect is not None:
        check_same_episode(rec, expect, what)
    steps = {"camera": cameras[:-1], "action": rec["actions"], "expert_action": rec["expert_actions"],
             "saliency": maps[:-1]}
    facts = {k: rec["steps"][k] for k in ("speed", "crashed", "on_road", "on_route", "time", "progress")
             if k in rec["steps"]}
    n = len(scene[1]) if len(scene) > 1 else env.scenario.simulation_frequency // env.scenario.policy_frequency
    name = getattr(policy, "name", None)
    if not name and getattr(policy, "path", None) is not None:  # a checkpoint: RUN/checkpoints/STEP
        name = "/".join(Path(policy.path).parts[-3:])
    name = name or type(policy).__name__
    rollout = {
        "scene": np.concatenate(scene),
        "camera": np.stack(steps["camera"]),
        "action": np.stack(steps["action"]).astype(np.float32),
        "expert_action": np.stack(steps["expert_action"]).astype(np.float32),
        **{k: np.asarray(v) for k, v in facts.items()},
        "collision": collision_with(rec["steps"]),
        "substeps": int(n),
        "fps": int(env.scenario.simulation_frequency),
        "seed": int(seed),
        "title": title or f"{env.scenario.name}  seed {seed}  {name}",
        "labels": ("policy", "expert"),
        "camera_title": "what the policy saw",
        "saliency_method": saliency_method if model is not None else None,
    }
    if model is not None:
        rollout["saliency"] = np.stack(steps["saliency"]).astype(np.float32)
    return rollout


# -- composition -----------------------------------------------------------------------------------
def _rgb(frame: np.ndarray) -> np.ndarray:
    return frame if frame.ndim == 3 else np.repeat(frame[..., None], 3, axis=2)


def _text(img, s, org, scale=0.5, colour=TEXT, thickness=1, box=False):
    if box:  # darken a box behind the text so it reads on any background
        (w, h), base = cv2.getTextSize(s, FONT, scale, thickness)
        x, y = org
        _darken(img, x - 4, y - h - 4, x + w + 4, y + base + 2)
    cv2.putText(img, s, org, FONT, scale, colour, thickness, cv2.LINE_AA)


def _fit_lines(s: str, max_w: int, scale: float, thickness: int = 1) -> list[str]:
    """`s` as lines no wider than max_w px (the scene's width): split at its double spaces, a part
    still too wide keeps its end ("...checkpoints/00001000"), so a title never runs into the panel."""
    def width(t):
        return cv2.getTextSize(t, FONT, scale, thickness)[0][0]

    lines: list[str] = []
    for part in [p for p in s.split("  ") if p]:
        if lines and width(lines[-1] + "  " + part) <= max_w:
            lines[-1] += "  " + part
            continue
        while width(part) > max_w and len(part) > 4:
            part = "..." + part[4:]
        lines.append(part)
    return lines or [""]


def _darken(img, x0, y0, x1, y1, keep=0.35):
    sub = img[max(0, y0): max(0, y1), max(0, x0): max(0, x1)]
    sub[:] = (sub.astype(np.float32) * keep).astype(np.uint8)


def _text_width(s, scale=0.5, thickness=1) -> int:
    return cv2.getTextSize(s, FONT, scale, thickness)[0][0]


def overlay_saliency(frame: np.ndarray, sal: np.ndarray, strength: float = 0.85, floor: float = 0.1,
                     gamma: float = 0.6) -> np.ndarray:
    """Blend a heat map onto an RGB frame. Opacity grows with saliency from 0 at `floor`, so cold
    areas stay untouched; gamma < 1 lifts the weak parts (VisualBackProp masks are products of
    several maps and very peaked)."""
    from driving.saliency import heatmap

    sal = np.clip((np.asarray(sal, dtype=np.float32) - floor) / (1 - floor), 0, 1) ** gamma
    heat = heatmap(0.25 + 0.75 * sal).astype(np.float32)  # skip the near-black end of the map
    alpha = (strength * sal)[..., None]
    return (frame.astype(np.float32) * (1 - alpha) + heat * alpha + 0.5).astype(np.uint8)


class _Layout:
    """Sizes and positions, computed once per rollout."""

    PANEL_W = 360
    PAD = 12

    def __init__(self, rollout: dict):
        hs, ws = rollout["scene"].shape[1:3]
        k, h, w = rollout["camera"].shape[1:4]
        self.k = k
        avail_w = self.PANEL_W - 2 * self.PAD - (k - 1) * 6
        self.scale = max(1, min(avail_w // (k * w), max(1, int(hs * 0.58) // h)))
        self.tile = (h * self.scale, w * self.scale)
        self.tiles_w = k * self.tile[1] + (k - 1) * 6
        self.panel_w = max(self.PANEL_W, self.tiles_w + 2 * self.PAD)
        self.tiles_y = 48
        self.bars_y = self.tiles_y + self.tile[0] + 34
        panel_h = self.bars_y + 142
        self.height = _even(max(hs, panel_h))
        self.width = _even(ws + self.panel_w)
        self.scene_x, self.scene_y = 0, (self.height - hs) // 2
        self.panel_x = ws


def _even(n: int) -> int:
    return n + (n % 2)


def _bar(img, x, y, w, value, colour, label):
    """A horizontal bar from the centre line: value in [-1, 1]; NaN draws nothing."""
    h = 11
    cx = x + w // 2
    cv2.rectangle(img, (x, y), (x + w, y + h), (55, 58, 64), -1)
    if np.isfinite(value):
        end = round(cx + float(np.clip(value, -1, 1)) * (w // 2))
        cv2.rectangle(img, (min(cx, end), y), (max(cx, end), y + h), colour, -1)
        txt = f"{value:+.2f}"
    else:
        txt = "  n/a"
    for q in (x, x + w // 4, x + 3 * w // 4, x + w):
        cv2.line(img, (q, y + h), (q, y + h + 2), DIM, 1)
    cv2.line(img, (cx, y - 2), (cx, y + h + 2), TEXT, 1)
    _text(img, label, (x - 62, y + h - 1), 0.42, colour)
    _text(img, txt, (x + w + 6, y + h - 1), 0.42, colour)


def _status(rollout: dict, k: int) -> tuple[int, int, bool, bool]:
    """(decision index, state index, crashed so far, off-road now) of video frame k."""
    n = int(rollout["substeps"])
    t_steps = len(rollout["action"])
    d = min(max(0, -(-k // n) - 1), t_steps - 1)  # the step being executed (ceil(k/n) - 1)
    s = min(k // n, len(rollout["speed"]) - 1)  # the last completed step
    crashed = bool(np.any(rollout["crashed"][: s + 1]))
    offroad = not bool(rollout["on_road"][s])
    return d, s, crashed, offroad


def _left_route(rollout: dict, k: int) -> bool:
    """Has the ego left the scenario's route (sim/route.py) by video frame k? It stays left."""
    on_route = rollout.get("on_route")
    s = min(k // int(rollout["substeps"]), len(rollout["speed"]) - 1)
    return on_route is not None and not bool(np.all(on_route[: s + 1]))


def compose_frame(rollout: dict, k: int, layout: _Layout | None = None, _tiles: dict | None = None) -> np.ndarray:
    """Video frame k (0 .. len(scene)-1) as (H, W, 3) uint8 RGB."""
    lay = layout or _Layout(rollout)
    d, s, crashed, offroad = _status(rollout, k)
    img = np.empty((lay.height, lay.width, 3), np.uint8)
    img[:] = PANEL_BG
    scene = rollout["scene"][k]
    hs, ws = scene.shape[:2]
    img[lay.scene_y: lay.scene_y + hs, lay.scene_x: lay.scene_x + ws] = _rgb(scene)

    # scene overlay: title, time, status
    fps = float(rollout["fps"])
    lines = _fit_lines(rollout.get("title", ""), ws - 28, 0.45)
    for i, line in enumerate(lines):
        _text(img, line, (14, lay.scene_y + 24 + 22 * i), 0.45, TEXT, 1, box=True)
    _text(img, f"{k / fps:4.1f} s   step {d + 1}/{len(rollout['action'])}", (14, lay.scene_y + 24 + 22 * len(lines)),
          0.45, TEXT, 1, box=True)
    # banners go low in the scene: behind the ego, where they hide the least
    by = lay.scene_y + int(hs * 0.9)
    if offroad:
        _banner(img, "OFF ROAD", lay.scene_x + ws // 2, by, OFFROAD_COLOUR)
    if _left_route(rollout, k):  # above the others: the task failed, maybe long before a crash
        _banner(img, "WRONG TURN", lay.scene_x + ws // 2, by - 56 * (offroad + crashed), OFFROAD_COLOUR)
    if crashed:
        _banner(img, "CRASH", lay.scene_x + ws // 2, by - (56 if offroad else 0), CRASH_COLOUR)
        kind = rollout.get("collision", "")
        if kind in COLLISION_KINDS:  # under the banner, what the ego hit
            hit = f"into {COLLISION_KINDS[kind]}"
            (w, _), _ = cv2.getTextSize(hit, FONT, 0.6, 1)
            _text(img, hit, (lay.scene_x + ws // 2 - w // 2, by + 36 - (56 if offroad else 0)), 0.6, CRASH_COLOUR, 1,
                  box=True)

    # panel: the policy's camera
    px, pad = lay.panel_x, lay.PAD
    x0 = px + (lay.panel_w - lay.tiles_w) // 2
    labels = rollout.get("labels", ("policy", "expert"))
    _text(img, f"{rollout.get('camera_title', 'what the policy saw')} (stack of {lay.k}, newest right)",
          (px + pad, 22), 0.45, TEXT)
    method = rollout.get("saliency_method")
    if method:
        _text(img, f"heat: saliency ({method}) on the newest frame", (px + pad, 40), 0.4, DIM)
    tiles = _tiles if _tiles is not None else {}
    if d not in tiles:
        tiles.clear()
        tiles[d] = _camera_tiles(rollout, d, lay)
    for i, tile in enumerate(tiles[d]):
        tx = x0 + i * (lay.tile[1] + 6)
        img[lay.tiles_y: lay.tiles_y + lay.tile[0], tx: tx + lay.tile[1]] = tile
        name = "newest" if i == lay.k - 1 else f"t-{lay.k - 1 - i}"
        _text(img, name, (tx + 2, lay.tiles_y + lay.tile[0] + 16), 0.4, DIM)

    # panel: actions, speed
    bx, bw = px + pad + 64, lay.panel_w - 2 * pad - 64 - 50
    y = lay.bars_y
    act, exp = rollout["action"][d], rollout["expert_action"][d]
    for j, (name, low, high) in enumerate((("steer", "left", "right"), ("accel", "brake", "throttle"))):
        _text(img, name, (px + pad, y), 0.5, TEXT)
        _text(img, low, (bx, y), 0.4, DIM)
        _text(img, high, (bx + bw - _text_width(high, 0.4), y), 0.4, DIM)
        _bar(img, bx, y + 8, bw, act[j], POLICY_COLOUR, labels[0])
        _bar(img, bx, y + 24, bw, exp[j], EXPERT_COLOUR, labels[1])
        y += 62
    _text(img, f"{float(rollout['speed'][s]):5.1f} m/s", (px + pad, y), 0.8, TEXT, 2)
    _text(img, f"{float(rollout['speed'][s]) * 3.6:4.0f} km/h", (px + pad + 150, y), 0.5, DIM)

    if crashed or offroad:
        colour = CRASH_COLOUR if crashed else OFFROAD_COLOUR
        cv2.rectangle(img, (BORDER // 2, BORDER // 2), (lay.width - 1 - BORDER // 2, lay.height - 1 - BORDER // 2),
                      colour, BORDER)
    return img


def _banner(img, s, cx, cy, colour):
    scale, th = 1.6, 4
    (w, h), _ = cv2.getTextSize(s, FONT, scale, th)
    _darken(img, cx - w // 2 - 12, cy - h - 12, cx + w // 2 + 12, cy + 14)
    _text(img, s, (cx - w // 2, cy), scale, colour, th)


def _camera_tiles(rollout: dict, d: int, lay: _Layout) -> list[np.ndarray]:
    frames = rollout["camera"][d]
    out = []
    for i, f in enumerate(frames):
        f = _rgb(f)
        if i == len(frames) - 1 and "saliency" in rollout:
            f = overlay_saliency(f, rollout["saliency"][d])
        up = cv2.resize(f, (lay.tile[1], lay.tile[0]), interpolation=cv2.INTER_NEAREST)
        cv2.rectangle(up, (0, 0), (up.shape[1] - 1, up.shape[0] - 1), (90, 90, 90), 1)
        out.append(up)
    return out


def compose_frames(rollout: dict) -> Iterator[np.ndarray]:
    """All video frames of a rollout, one per simulation substep (1 + T*n), as RGB uint8."""
    lay = _Layout(rollout)
    tiles: dict = {}
    for k in range(len(rollout["scene"])):
        yield compose_frame(rollout, k, lay, tiles)


# -- encoding --------------------------------------------------------------------------------------
def encode_mp4(frames, path: str | Path, fps: float, crf: int = 20) -> Path:
    """Write RGB uint8 frames (an iterable of equal-size (H, W, 3), even H and W) to an H.264 MP4
    (yuv420p, avc1, faststart: plays in browsers), atomically."""
    path = Path(path)
    with Mp4Writer(path, fps, options={"crf": str(crf), "preset": "medium", "tune": "animation"}) as writer:
        for frame in frames:
            writer.write(frame)
        if writer.frames == 0:
            raise ValueError(f"no frames to write to {path}")
    return path


class Mp4Writer:
    """An MP4 written frame by frame, atomically: into a temp file beside `path`, renamed into place
    (fsynced, a normal file's mode) by `close()`, or by leaving the `with` block normally; an exception
    in the block, or `abort()`, removes the temp file. Frame k gets the timestamp k / fps exactly.

    The defaults make browser-playable H.264 (libx264, yuv420p: needs even sizes). Lossless H.264, which
    decodes to exactly the frames given (RGB kept as RGB: no YUV conversion, no colour-range question):
    `codec="libx264rgb", pix_fmt="rgb24", options={"qp": "0"}`. Frames: (H, W, 3) RGB uint8."""

    def __init__(self, path: str | Path, fps: float, codec: str = "libx264", pix_fmt: str = "yuv420p",
                 options: dict | None = None, faststart: bool = True):
        import av

        if codec not in av.codecs_available:
            raise UserError(f"this PyAV build has no H.264 encoder ({codec}): install PyAV's wheel from PyPI "
                            "(pip install --force-reinstall 'av>=12')")
        self.path = Path(path)
        self.fps, self.codec, self.pix_fmt = fps, codec, pix_fmt
        self.options = dict(options or {})
        self.frames = 0
        self._bytes = 0
        self._tmp = atomic.temp_beside(self.path, ".tmp.mp4")
        try:
            self._container = av.open(self._tmp, mode="w", format="mp4",
                                      options={"movflags": "+faststart"} if faststart else {})
        except BaseException:
            Path(self._tmp).unlink(missing_ok=True)
            raise
        self._stream = None

    @property
    def bytes(self) -> int:
        """Bytes of encoded video muxed so far (the file's size, less its headers)."""
        return self._bytes

    def _open_stream(self, h: int, w: int):
        from fractions import Fraction

        if self.pix_fmt in ("yuv420p", "yuvj420p", "nv12") and (h % 2 or w % 2):
            raise ValueError(f"H.264 ({self.pix_fmt}) needs even frame sizes, got {w}x{h}")
        rate = _rate(self.fps)
        stream = self._container.add_stream(self.codec, rate=rate)
        stream.width, stream.height = w, h
        stream.pix_fmt = self.pix_fmt
        stream.codec_context.time_base = Fraction(1) / rate
        stream.options = self.options
        return stream

    def write(self, frame) -> None:
        import av

        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"a video frame must be (H, W, 3) RGB, got shape {frame.shape}")
        if self._stream is None:
            self._stream = self._open_stream(*frame.shape[:2])
        elif frame.shape[:2] != (self._stream.height, self._stream.width):
            raise ValueError(f"frame {self.frames} is {frame.shape[1]}x{frame.shape[0]}, the video "
                             f"{self._stream.width}x{self._stream.height}")
        vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
        vf.pts = self.frames
        self._mux(self._stream.encode(vf))
        self.frames += 1

    def _mux(self, packets) -> None:
        for packet in packets:
            self._bytes += packet.size
            self._container.mux(packet)

    def close(self) -> Path:
        """Flush, close and move the file into place; returns its path."""
        try:
            if self._stream is not None:
                self._mux(self._stream.encode())
            self._container.close()
            atomic.install(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Drop the file being written."""
        with contextlib.suppress(Exception):  # closing a half-written container may fail: the file goes anyway
            self._container.close()
        Path(self._tmp).unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _rate(fps: float):
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)


def write_video(rollout: dict, path: str | Path, fps: float | None = None, crf: int = 20) -> Path:
    """Compose and encode a rollout; fps defaults to the simulation frequency (real time)."""
    return encode_mp4(compose_frames(rollout), path, fps or rollout["fps"], crf=crf)


def probe_video(path: str | Path, decode: bool = False) -> dict:
    """Codec, size, frame count and rate of a video file (and its RGB frames when `decode`)."""
    import av

    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        ctx = vs.codec_context
        info = {"codec": ctx.name, "codec_tag": vs.codec_tag, "pix_fmt": ctx.pix_fmt, "width": ctx.width,
                "height": ctx.height, "fps": float(vs.average_rate) if vs.average_rate else None,
                "format": c.format.name}
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(vs)]
    info["frames"] = len(frames)
    if decode:
        info["data"] = np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)
    return info


# -- dataset episodes ------------------------------------------------------------------------------
def _collect_config(ds: Dataset):
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from driving.data.collect import CollectConfig

    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(CollectConfig), ds.meta["config"]))
    except (OmegaConfBaseException, TypeError) as e:  # (OmegaConf's errors are ValueErrors too: first)
        raise DatasetError(f"{ds.root}/meta.json holds no collect config this version can rebuild the "
                           f"simulation from ({str(e).splitlines()[0]}): only datasets made by "
                           "`driving collect` can be replayed") from None
    except ValueError as e:  # the config's own checks: a value this version refuses (e.g. a newer limit)
        raise DatasetError(f"{ds.root}/meta.json records a collect config this version refuses "
                           f"({str(e).splitlines()[0]}), so its episodes cannot be re-simulated: collect it "
                           "again with this version to watch it") from None


def _episode_row(ds: Dataset, episode: int) -> tuple[int, dict]:
    for i, row in enumerate(ds.index):
        if row["episode"] == episode:
            return i, row
    have = [r["episode"] for r in ds.index]
    span = f"{min(have)}..{max(have)}" if have else "none"
    raise UserError(f"dataset {ds.root} has no episode {episode} (episodes: {span})")


def replay_episode(dataset_dir: str | Path, episode: int,
                   scene_camera: CameraConfig = SCENE_CAMERA) -> dict:
    """Re-simulate a dataset episode from its seed with its recorded executed actions; returns a
    rollout (bars: "executed" and the "expert" label). Raises DatasetError if the replayed camera frames
    differ from the recorded ones (the simulator or camera code changed since collection)."""
    ds = Dataset.open(dataset_dir)
    i, row = _episode_row(ds, episode)
    cfg = _collect_config(ds)
    arrays = ds.episode(i, ("frames", "action", "expert_action"))
    env = build_env(cfg.scenario, cfg.camera, cfg.max_steps, scene_camera=scene_camera, env=cfg.env,
                    expert=cfg.expert)
    frames, actions = arrays["frames"], arrays["action"]
    hint = (f"replay of episode {episode} (seed {row['seed']}) of {ds.root} diverged from the recorded "
            "frames at step {t}: the simulator, scenario or camera code changed since it was collected; "
            "re-collect the dataset to make videos of it")

    class _Recorded:
        name = "recorded"
        t = 0

        def act(self, batch):
            t = self.t
            if not np.array_equal(batch["camera"][0][-1], frames[t]):
                raise DatasetError(hint.format(t=t))
            self.t += 1
            return actions[t][None]

    try:
        # the env ends the episode by itself; a longer replay would mean a different simulation
        env = _Truncate(env, len(actions), hint)
        rollout = record_rollout(env, _Recorded(), int(row["seed"]),
                                 title=f"dataset {ds.root.name}  episode {episode}  seed {row['seed']}")
    finally:
        env.close()
    if len(rollout["action"]) != len(actions):
        raise DatasetError(hint.format(t=len(rollout["action"])))
    rollout["expert_action"] = arrays["expert_action"].astype(np.float32)
    rollout["labels"] = ("executed", "expert")
    rollout["camera_title"] = "the recorded camera"
    return rollout


class _Truncate:
    """Env proxy that stops a replay after `n` steps (a replay must end exactly where the data does)."""

    def __init__(self, env, n: int, hint: str):
        self._env, self._n, self._hint = env, n, hint

    def __getattr__(self, name):
        return getattr(self._env, name)

    def step(self, action):
        obs, r, terminated, truncated, info = self._env.step(action)
        if info["step"] >= self._n and not (terminated or truncated):
            raise DatasetError(self._hint.format(t=self._n) + " (the episode did not end)")
        return obs, r, terminated, truncated, info

    def close(self):
        self._env.close()


def dataset_episode_video(dataset_dir: str | Path, episode: int, path: str | Path,
                          scene_camera: CameraConfig = SCENE_CAMERA) -> Path:
    """Replay a dataset episode (see `replay_episode`) and write its video to `path`."""
    return write_video(replay_episode(dataset_dir, episode, scene_camera), path)


def video_for_dataset(dataset_dir: str | Path, out_dir: str | Path, episodes: Sequence[int] | None = None,
                      scene_camera: CameraConfig = SCENE_CAMERA, progress: bool = False) -> list[Path]:
    """Videos of dataset episodes (all when `episodes` is None) as OUT_DIR/episode_NNNNNN.mp4."""
    from tqdm import tqdm

    ds = Dataset.open(dataset_dir)
    episodes = [r["episode"] for r in ds.index] if episodes is None else list(episodes)
    for e in episodes:
        _episode_row(ds, e)  # fail before any work on a bad episode number
    out = []
    for e in tqdm(episodes, unit="video", disable=not progress, desc="videos", dynamic_ncols=True):
        out.append(dataset_episode_video(dataset_dir, e, Path(out_dir) / f"episode_{e:06d}.mp4", scene_camera))
    return out


def policy_episode_video(policy, scenario: str, seed: int, camera: dict, path: str | Path,
                         max_steps: int | None = None, saliency: str | None = "vbp",
                         scene_camera: CameraConfig = SCENE_CAMERA, env: dict | None = None,
                         expert: dict | None = None, actions=None, expect: dict | None = None) -> Path:
    """Re-run one evaluation episode and write its video: with its recorded `actions` when given,
    checked against its scored row `expect` when given (record_rollout)."""
    env = build_env(scenario, camera, max_steps, scene_camera=scene_camera, env=env, expert=expert)
    try:
        method = saliency if getattr(policy, "model", None) is not None else None
        rollout = record_rollout(env, policy, seed, saliency_method=method, actions=actions, expect=expect)
    finally:
        env.close()
    return write_video(rollout, path)


__all__ = ["SCENE_CAMERA", "Mp4Writer", "compose_frame", "compose_frames", "dataset_episode_video", "encode_mp4",
           "overlay_saliency", "policy_episode_video", "probe_video", "record_rollout", "replay_episode",
           "video_for_dataset", "write_video"]
