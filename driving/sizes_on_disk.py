"""A pipeline (`driving dagger`, `driving demo`, `driving scoreboard`) re-run over its own folder with
smaller sizes: its stages would reuse what is on disk as it is (a collection keeps an earlier, larger
dataset; a training run past its steps stops at once) while the command's table states the smaller
sizes. Refused before any work, naming what is on disk and the two ways on.
"""
from __future__ import annotations

import os
from pathlib import Path

from driving.errors import UserError


def episodes_upto(root: str | Path) -> int:
    """One past the highest episode number the dataset at `root` indexes (0: none, or no dataset)."""
    from driving.data.collect import load_index

    root = Path(root)
    if not (root / "index.json").is_file():
        return 0
    return max((row["episode"] + 1 for row in load_index(root) if isinstance(row["episode"], int)), default=0)


def trained_step(run_dir: str | Path) -> int | None:
    """The step of a training run's `last` checkpoint (the name of the folder it points to), or None."""
    last = Path(run_dir) / "checkpoints" / "last"
    try:
        name = os.path.basename(os.readlink(last)) if last.is_symlink() else None
    except OSError:
        return None
    return int(name) if name and name.isdigit() else None


def refuse_smaller(datasets: list = (), runs: list = ()) -> None:
    """`datasets`: (folder, episodes asked for, the key that sets them); `runs`: (training run folder,
    steps asked for, the key that sets them). One UserError for the first that holds more."""
    for root, episodes, key in datasets:
        upto = episodes_upto(root)
        if upto > episodes:
            raise UserError(
                f"{root} already holds episodes up to number {upto - 1} and {key}={episodes} asks for fewer: "
                f"training would use them all while the table says {episodes}. Use {key}={upto} (or more) to "
                "go on with it, or another out= folder for the smaller run")
    for run_dir, steps, key in runs:
        step = trained_step(run_dir)
        if step is not None and step > steps:
            raise UserError(
                f"{run_dir} is already trained to step {step} and {key}={steps} asks for fewer: its "
                f"step-{step} checkpoint would be scored as a {steps}-step run. Use {key}={step} (or more) "
                "to go on with it, or another out= folder for the shorter run")
