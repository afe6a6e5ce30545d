"""`driving data rebuild DATASET`: meta.json and index.json again from the episode files alone.

Episode files are the source of truth: each carries its summary and (since checksums) the dataset's
meta. A dataset whose meta.json or index.json was lost or damaged is restored from them; corrupt
episode files are named and left out of the index (a `driving collect` re-run collects them again).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from driving.data.format import META_KEYS, DatasetError, episode_filename, meta_fault, read_episode_file
from driving.folder_lock import writing

_EPISODE = re.compile(r"^(\d{6})\.npz$")


def rebuild(root: str | Path) -> dict:
    root = Path(root)
    if not (root / "episodes").is_dir():
        raise DatasetError(f"{root} has no episodes/ folder: not a dataset made by `driving collect`")
    with writing(root, "driving data rebuild"):
        return _rebuild(root)


def _rebuild(root: Path) -> dict:
    from driving.data.collect import load_index, write_index

    recorded = {r["episode"]: r.get("sha256") for r in load_index(root)}  # where the index is still readable
    rows, corrupt, metas = {}, [], {}
    for path in sorted((root / "episodes").iterdir()):
        m = _EPISODE.match(path.name)
        if not m:
            continue
        episode = int(m.group(1))
        try:
            _, summary, meta, digest = read_episode_file(path, keys=("speed",), sha256=recorded.get(episode),
                                                         full_check=True, with_meta=True)
        except DatasetError as e:
            corrupt.append(str(e))
            continue
        rows[episode] = {"episode": episode, "file": episode_filename(episode), **summary, "sha256": digest}
        if meta is not None:
            metas[episode] = meta
    if not rows:
        raise DatasetError(f"{root}/episodes holds no readable episode file: nothing to rebuild, collect again")
    meta, how = _meta(root, metas, len(rows))
    asked = meta.get("collection") or {}
    if asked.get("finished") and len(rows) < asked.get("requested", 0):
        # an episode file was lost after the collection finished: the dataset is no longer whole
        meta = {**meta, "collection": {**asked, "finished": False}}
        how += (f"; {asked['requested'] - len(rows)} of the {asked['requested']} episodes its collection made are "
                "missing (marked not finished: its `driving collect` command collects them again)")
    write_index(root, rows, meta)
    return {"episodes": len(rows), "frames": int(sum(r["length"] for r in rows.values())), "meta": how,
            "corrupt": corrupt}


def _meta(root: Path, metas: dict, n: int) -> tuple[dict, str]:
    """The dataset's meta: meta.json where it is intact, else the one the episode files carry."""
    path = root / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(meta, dict) and all(k in meta for k in META_KEYS) and meta_fault(meta) is None:
            return meta, "kept"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        pass
    if not metas:
        raise DatasetError(f"{path} is missing or damaged and the {n} episode files predate the copy of it they "
                           "now carry: this dataset's meta cannot be rebuilt; collect it again")
    first_ep, first = next(iter(metas.items()))
    for ep, m in metas.items():
        if m != first:
            raise DatasetError(f"episode files {first_ep} and {ep} in {root} carry different dataset metas "
                               "(two collections mixed in one folder): move one collection's files elsewhere")
    # how far the collection had got is not in the episodes: the meta says nothing of it (read as
    # finished), and the note says so
    return {**first, "counts": {}}, (f"rebuilt from {len(metas)} episode files (whether its collection had "
                                     "finished is not recorded there: re-run its `driving collect` command "
                                     "to be sure, it collects only what is missing)")
