"""report.md and report.html of an evaluation: policy beside expert, videos worst first."""
from __future__ import annotations

import html
from pathlib import Path

from driving import atomic
from driving.rollout import worst as worst_rows
from sim.metrics import COLLISION_KINDS

ROWS = [("driving_score", "driving score", "{:.3f}"), ("success_rate", "success rate", "{:.0%}"),
        ("collision_rate", "collision rate", "{:.0%}"),
        *((f"collision_{kind}_rate", f"  into {what}", "{:.0%}") for kind, what in COLLISION_KINDS.items()),
        ("offroad_episode_rate", "episodes off road", "{:.0%}"),
        ("off_route_rate", "episodes off the route", "{:.0%}"),
        ("route_completion", "route completion", "{:.3f}"), ("mean_speed", "mean speed m/s", "{:.1f}"),
        ("distance_m", "distance m", "{:.0f}"), ("offroad_fraction", "off-road fraction", "{:.3f}"),
        ("mean_abs_long_accel", "mean abs long. accel m/s²", "{:.2f}"),
        ("mean_abs_lat_accel", "mean abs lat. accel m/s²", "{:.2f}"),
        ("lane_keeping_lat_accel", "mean abs lat. accel keeping a lane m/s²", "{:.2f}"),
        ("rms_jerk", "RMS jerk m/s³", "{:.1f}"),
        ("lane_changes", "lane changes per episode", "{:.2f}"), ("min_ttc_s", "min time-to-collision s", "{:.1f}"),
        ("min_headway_s", "min time headway s", "{:.2f}")]
# rates are per-seed booleans in the paired differences
PAIRED_KEY = {"success_rate": "success", "collision_rate": "crashed"}


def _cell(agg: dict | None, fmt: str, sign: bool = False) -> str:
    if agg is None or not agg.get("n", 1):
        return "–"
    f = fmt.replace("{:", "{:+") if sign else fmt
    if agg.get("n", 2) < 2:  # one value has no interval
        return f.format(agg["mean"])
    return f"{f.format(agg['mean'])} [{f.format(agg['ci_low'])}, {f.format(agg['ci_high'])}]"


def table_rows(agg_policy: dict, agg_expert: dict, paired: dict | None = None) -> list[tuple[str, ...]]:
    """(label, policy, expert, policy - expert on the same seeds) for every metric the results hold."""
    paired = paired or {}
    return [(label, _cell(agg_policy.get(key), fmt), _cell(agg_expert.get(key), fmt),
             _cell(paired.get(PAIRED_KEY.get(key, key)), fmt, sign=True))
            for key, label, fmt in ROWS if key in agg_policy or key in agg_expert]


def _rows(s: dict) -> list[tuple[str, ...]]:
    return table_rows(s["aggregate"]["policy"], s["aggregate"]["expert"], s.get("paired"))


def text_table(result: dict) -> str:
    """The metric table of every scenario, policy beside expert and their paired difference."""
    lines = []
    for name, s in result["scenarios"].items():
        n = len(s["episodes"]["policy"])
        lines.append(f"\n{name}: {n} episodes".ljust(31) + f"{'policy':26} {'expert':26} policy - expert")
        lines += [f"  {a:27} {b:26} {c:26} {d}" for a, b, c, d in _rows(s)]
    return "\n".join(lines)


def markdown(result: dict) -> str:
    lines = [f"# Closed-loop evaluation: {result['policy']}", "",
             f"checkpoint: `{result['checkpoint']}`  ", f"trained on: {result.get('trained_on')}  ",
             f"episodes per scenario: {result['config']['episodes']} (seeds from {result['config']['seed']})  ",
             "values: mean [95% CI]; rates use Wilson intervals; policy - expert: the mean difference on the "
             "same seeds with a paired t interval (rates: Newcombe's paired interval). Driving score = route "
             "completion (vs the expert on the same seed; where the scenario names a route, up to where the ego "
             "left it) x 0.6 if crashed x (1 - off-road fraction) x 0.7 if it left the route. Time-to-collision "
             "and headway: to the vehicle ahead in the ego's lane, capped at 10 s.", ""]
    for name, s in result["scenarios"].items():
        lines += [f"## {name}", "", "| metric | policy | expert | policy - expert |", "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _rows(s)]
        worst = worst_rows(s["episodes"]["policy"], 5)
        lines += ["", "Worst episodes:", "", "| seed | score | crashed | off-road | off the route | distance m | "
                  "speed m/s |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['seed']} | {r['driving_score']:.3f} | {r.get('collision_with') or r['crashed']} | "
                  f"{r['offroad_fraction']:.2f} | {'yes' if r.get('off_route') else 'no'} | "
                  f"{r['distance_m']:.0f} | {r['mean_speed']:.1f} |" for r in worst]
        lines.append("")
    if result.get("videos"):
        lines += ["## Videos (worst first)", ""]
        lines += [f"- [{v['scenario']} seed {v['seed']}]({v['file']}) score {v['driving_score']:.3f}"
                  f"{' crashed' if v['crashed'] else ''}" for v in result["videos"]]
    return "\n".join(lines) + "\n"


def html_page(result: dict) -> str:
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>evaluation</title><style>",
             "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px}"
             "th{background:#f3f3f3}video{margin:0.5em 1em 0.5em 0;max-height:520px}"
             ".bad{color:#b00}</style></head><body>",
             f"<h1>Closed-loop evaluation: {e(str(result['policy']))}</h1>",
             f"<p>checkpoint <code>{e(str(result['checkpoint']))}</code>; trained on {e(str(result.get('trained_on')))};"
             f" {result['config']['episodes']} episodes per scenario, seeds from {result['config']['seed']}."
             " Values: mean [95% CI]; policy &minus; expert: paired intervals (t; rates: Newcombe's)."
             " Driving score = route completion (vs the expert on the same seed; where the scenario names a"
             " route, up to where the ego left it) &times; 0.6 if crashed &times; (1 &minus; off-road fraction)"
             " &times; 0.7 if it left the route.</p>"]
    for name, s in result["scenarios"].items():
        parts.append(f"<h2>{e(name)}</h2><table><tr><th>metric</th><th>policy</th><th>expert</th>"
                     "<th>policy &minus; expert (same seeds)</th></tr>")
        parts += [f"<tr><td>{e(a)}</td><td>{e(b)}</td><td>{e(c)}</td><td>{e(d)}</td></tr>" for a, b, c, d in _rows(s)]
        parts.append("</table>")
    if result.get("videos"):
        parts.append("<h2>Videos, worst first</h2>")
        for v in result["videos"]:
            cls = " class='bad'" if v["crashed"] else ""
            parts.append(f"<div><p{cls}>{e(v['scenario'])} seed {v['seed']}: score {v['driving_score']:.3f}"
                         f"{' (crashed)' if v['crashed'] else ''}</p>"
                         f"<video controls muted src='{e(v['file'])}'></video></div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_reports(result: dict, out: Path) -> None:
    atomic.write_bytes(Path(out) / "report.md", markdown(result).encode())
    atomic.write_bytes(Path(out) / "report.html", html_page(result).encode())
