"""Reading a user's JSON file (COCO ground truth and results, Anti-UAV labels) with one-line errors."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from pipeline.errors import InputError


def read_json(path: str | Path, recover: Callable[[str], Any] | None = None) -> Any:
    """The parsed file. A missing or unreadable file, invalid JSON (with its line) or JSON nested too
    deeply for the parser is an InputError naming the file. `recover(text)`, when given, is asked first
    for invalid JSON: what it returns, unless None, is the result (e.g. a file cut by a killed run)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path)
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text)
    except json.JSONDecodeError as e:
        data = None if recover is None else recover(text)
        if data is None:
            raise InputError(f"invalid JSON: {e.msg}", path, e.lineno) from None
        return data
    except RecursionError:
        raise InputError("invalid JSON: nested too deeply", path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read: {e}", path) from None
