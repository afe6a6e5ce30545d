"""report.md and report.html of an evaluation: policy beside expert, videos worst first."""
from __future__ import annotations

import html
from pathlib import Path

from driving import atomic

ROWS = [("driving_score", "driving score", "{:.3f}"), ("success_rate", "success rate", "{:.0%}"),
        ("collision_rate", "collision rate", "{:.0%}"), ("offroad_episode_rate", "episodes off road", "{:.0%}"),
        ("route_completion", "route completion", "{:.3f}"), ("mean_speed", "mean speed m/s", "{:.1f}"),
        ("distance_m", "distance m", "{:.0f}"), ("offroad_fraction", "off-road fraction", "{:.3f}"),
        ("mean_abs_long_accel", "mean abs long. accel m/s²", "{:.2f}"),
        ("mean_abs_lat_accel", "mean abs lat. accel m/s²", "{:.2f}"), ("rms_jerk", "RMS jerk m/s³", "{:.1f}")]


def _cell(agg: dict, fmt: str) -> str:
    return f"{fmt.format(agg['mean'])} [{fmt.format(agg['ci_low'])}, {fmt.format(agg['ci_high'])}]"


def table_rows(agg_policy: dict, agg_expert: dict) -> list[tuple[str, str, str]]:
    return [(label, _cell(agg_policy[key], fmt), _cell(agg_expert[key], fmt)) for key, label, fmt in ROWS]


def text_table(result: dict) -> str:
    """The metric table of every scenario, policy beside expert, for a terminal."""
    lines = []
    for name, s in result["scenarios"].items():
        n = len(s["episodes"]["policy"])
        lines.append(f"\n{name}: {n} episodes".ljust(31) + f"{'policy':26} expert")
        lines += [f"  {a:27} {b:26} {c}" for a, b, c in table_rows(s["aggregate"]["policy"], s["aggregate"]["expert"])]
    return "\n".join(lines)


def markdown(result: dict) -> str:
    lines = [f"# Closed-loop evaluation: {result['policy']}", "",
             f"checkpoint: `{result['checkpoint']}`  ", f"trained on: {result.get('trained_on')}  ",
             f"episodes per scenario: {result['config']['episodes']} (seeds from {result['config']['seed']})  ",
             "values: mean [95% CI]; rates use Wilson intervals. Driving score = route completion "
             "(vs the expert on the same seed) x 0.6 if crashed x (1 - off-road fraction).", ""]
    for name, s in result["scenarios"].items():
        lines += [f"## {name}", "", "| metric | policy | expert |", "|---|---|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in table_rows(s["aggregate"]["policy"], s["aggregate"]["expert"])]
        worst = sorted(s["episodes"]["policy"], key=lambda r: r["driving_score"])[:5]
        lines += ["", "Worst episodes:", "", "| seed | score | crashed | off-road | distance m | speed m/s |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['seed']} | {r['driving_score']:.3f} | {r['crashed']} | {r['offroad_fraction']:.2f} | "
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
             " Values: mean [95% CI]. Driving score = route completion (vs the expert on the same seed)"
             " &times; 0.6 if crashed &times; (1 &minus; off-road fraction).</p>"]
    for name, s in result["scenarios"].items():
        parts.append(f"<h2>{e(name)}</h2><table><tr><th>metric</th><th>policy</th><th>expert</th></tr>")
        parts += [f"<tr><td>{e(a)}</td><td>{e(b)}</td><td>{e(c)}</td></tr>"
                  for a, b, c in table_rows(s["aggregate"]["policy"], s["aggregate"]["expert"])]
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
