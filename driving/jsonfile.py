"""The one way a JSON file of ours is read: decoding and shape errors become one UserError naming the
file and the fix, never a traceback (non-UTF-8 bytes, invalid JSON, an object where a list belongs)."""
from __future__ import annotations

import json
from pathlib import Path

from driving.errors import UserError


def read_json(path: str | Path, kind: type = dict, fix: str = "restore it or write it again",
              error: type = UserError):
    """The content of `path`, which must be a JSON object (kind=dict) or array (kind=list)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise error(f"{path} is missing: {fix}") from None
    except UnicodeDecodeError as e:
        raise error(f"{path} is not UTF-8 text (byte {e.start}): {fix}") from None
    except json.JSONDecodeError as e:
        raise error(f"{path} is not valid JSON ({e}): {fix}") from None
    if not isinstance(obj, kind):
        want = "an object" if kind is dict else "an array"
        raise error(f"{path} holds {type(obj).__name__} where {want} belongs: {fix}")
    return obj
