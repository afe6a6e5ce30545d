"""The README's main job on built-in defaults: collect a small dataset, summarise it, draw it.

Later stages (train, evaluate, video) join here as they land, so that one command always runs the
whole pipeline end to end.
"""
from __future__ import annotations

from pathlib import Path

from driving.config import load_config
from driving.data.collect import CollectConfig, collect
from driving.data.contact_sheet import write_contact_sheet
from driving.data.format import Dataset
from driving.data.stats import dataset_stats, format_stats


def run_demo(out: str | Path = "runs/demo", overrides: list[str] = (), progress: bool = True) -> dict:
    out = Path(out)
    cfg = load_config(CollectConfig, None, [f"out={out / 'data'}", "episodes=8", *overrides])
    root = collect(cfg, progress=progress)
    ds = Dataset.open(root)
    stats = dataset_stats(ds)
    sheet = write_contact_sheet(ds, out / "data_contact_sheet.png")
    print(format_stats(stats))
    print(f"\ncontact sheet: {sheet}")
    return {"dataset": root, "stats": stats, "contact_sheet": sheet}
