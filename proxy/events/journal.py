"""The on-disk journal: events that could not reach Postgres wait here, one file per spill.

A spill is written to `*.jsonl.tmp` and renamed when complete, so a reader never sees half a
file. Replay inserts with `ON CONFLICT DO NOTHING`, so replaying a file twice (two workers, a
crash between insert and delete) never duplicates an event.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson


def _default(value: Any) -> Any:
    return str(value)  # Decimal (cost) and anything else exotic, as text Postgres can parse


def encode(row: Sequence[Any]) -> bytes:
    """One journal line: the row's columns (`COLUMNS` order) as a JSON array, and a newline."""
    try:
        return orjson.dumps(row, default=_default, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits (Postgres will refuse it; keep it to show)
        return json.dumps(list(row), default=_default).encode() + b"\n"


class Journal:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def append(self, rows: Sequence[Sequence[Any]]) -> Path:
        """Write rows to a new journal file (blocking; call from a worker thread)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"events-{os.getpid()}-{uuid.uuid4().hex}.jsonl"
        tmp = final.with_suffix(".jsonl.tmp")
        with open(tmp, "wb") as out:
            for row in rows:
                out.write(encode(row))
            out.flush()
            os.fsync(out.fileno())
        tmp.rename(final)
        return final

    def files(self) -> list[Path]:
        """Complete journal files, oldest first (another worker may remove one at any moment)."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in self.folder.glob("events-*.jsonl"):
            try:
                found.append((path.stat().st_mtime, path))
            except FileNotFoundError:
                continue
        return [path for _, path in sorted(found)]

    def pending_rows(self) -> int:
        total = 0
        for path in self.files():
            try:
                total += sum(1 for _ in self.read(path))
            except FileNotFoundError:
                continue
        return total

    @staticmethod
    def read(path: Path) -> Iterator[list[Any]]:
        with open(path, "rb") as src:
            for line in src:
                if line.strip():
                    yield orjson.loads(line)
