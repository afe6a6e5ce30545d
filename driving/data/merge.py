"""`driving data merge OUT SHARD...`: the N shards of one collection (`driving collect ... shard=K/N`)
as one dataset, equal to what the unsharded collection writes: the same episode files byte for byte
(episode files are deterministic), the same index.json and meta.json.

Every input is checked before OUT is touched: all shards of one split, one config, each finished.
Each file's bytes are checked against the SHA-256 its shard's index recorded while copying. A merge
that was interrupted resumes (files already in OUT with the right checksum are kept).
"""
from __future__ import annotations

from pathlib import Path

from driving import atomic
from driving.config import config_diff
from driving.data.format import Dataset, DatasetError, dataset_identity, sha256_of
from driving.errors import UserError
from driving.folder_lock import writing
from driving.shards import check_complete, shard_of

_FIX = "merge the N shard folders of one `driving collect ... shard=K/N` collection"


def check_shards(paths: list[str | Path]) -> tuple[list[Dataset], dict]:
    """Open and check the shards; returns them and the merged dataset's meta (counts to fill)."""
    if not paths:
        raise UserError("no shard folders given: driving data merge OUT SHARD_0 SHARD_1 ...")
    sets = [Dataset.open(p) for p in paths]
    split = {}  # root -> (its shard, the episodes of the whole collection)
    for ds in sets:
        try:
            shard = shard_of(ds.meta)
        except ValueError as e:
            raise UserError(f"{ds.root}/meta.json: {e}: re-run its `driving collect ... shard=K/N` command "
                            "(it keeps the episodes on disk)") from None
        if shard is None:
            raise UserError(f"{ds.root} is not a shard (it was collected without shard=K/N): {_FIX}")
        total = ds.meta["shard"].get("episodes")
        if not isinstance(total, int) or isinstance(total, bool) or total < 1:
            raise UserError(f"{ds.root}/meta.json does not say how many episodes the whole collection has "
                            f"(shard.episodes is {total!r}): re-run its `driving collect ... shard={shard}` command")
        split[ds.root] = (shard, total)
    first = sets[0]
    for ds in sets[1:]:
        if dataset_identity(ds.meta) != dataset_identity(first.meta) or split[ds.root][1] != split[first.root][1]:
            diff = config_diff(first.meta.get("config", {}), ds.meta.get("config", {})) or \
                f"episodes: {split[first.root][1]} there, {split[ds.root][1]} here"
            raise UserError(f"{ds.root} was collected with a different config than {first.root} ({diff}): {_FIX}")
    try:
        check_complete([split[ds.root][0] for ds in sets], [str(ds.root) for ds in sets],
                       "collect them with the same command and shard=K/N, then merge all N")
    except ValueError as e:
        raise UserError(str(e)) from None
    episodes = split[first.root][1]
    for ds in sets:
        shard = split[ds.root][0]
        want = set(shard.take(episodes))
        have = {r["episode"] for r in ds.index}
        if not want <= have:
            raise UserError(f"shard {shard} in {ds.root} is unfinished ({len(want & have)} of {len(want)} "
                            f"episodes): re-run its `driving collect ... shard={shard}` command, then merge")
    meta = dataset_identity(first.meta)
    meta["counts"] = {"episodes": 0, "frames": 0}
    return sets, meta


def merge_datasets(out: str | Path, paths: list[str | Path]) -> Path:
    from driving.data.collect import load_index, open_dataset, write_index

    sets, meta = check_shards(paths)
    out = Path(out)
    if any(out.resolve() == ds.root.resolve() for ds in sets):
        raise UserError(f"OUT {out} is one of the shards: give a new folder for the merged dataset")
    episodes = sets[0].meta["shard"]["episodes"]
    with writing(out, "driving data merge", holds="a dataset"):
        meta = open_dataset(out, meta, how="merge into another OUT folder")
        meta["collection"] = {"requested": episodes, "finished": False}  # as a collection of them all would
        present = {r["episode"]: r for r in load_index(out)}
        # rows of episodes beyond this collection's (an earlier, larger one in OUT) stay, as in a collection
        rows = {k: r for k, r in present.items() if k >= episodes}
        for ds in sets:
            for row in ds.index:
                if row["episode"] >= episodes:  # a shard may hold more from an earlier, larger run
                    continue
                rows[row["episode"]] = row
                dst = out / row["file"]
                if (present.get(row["episode"]) or {}).get("sha256") == row.get("sha256") and dst.is_file():
                    continue
                data = (ds.root / row["file"]).read_bytes()
                if row.get("sha256") and sha256_of(data) != row["sha256"]:
                    raise DatasetError(f"episode file {ds.root / row['file']} is corrupt (its SHA-256 differs "
                                       "from the one its index recorded): re-run that shard's `driving collect` "
                                       "command (it collects the episode again), then merge")
                atomic.write_bytes(dst, data)
            write_index(out, rows, meta)
        meta["collection"]["finished"] = True
        write_index(out, rows, meta)
    return out
