"""How a stage keeps its output: a folder written whole with a fingerprint marker, or a stage file that
resumes in place; and the JSONL rows the stages pass on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from polyret.io.fingerprint import check_match, read_json
from polyret.io.outputs import atomic_output_dir, atomic_write_text, read_marker

REMEDY = "use another --output_dir, or the same inputs and flags as the run that wrote it"


def stage_dir(folder: Path, kind: str, fingerprint: Mapping[str, Any], build: Callable[[Path], None]) -> bool:
    """A folder written whole by `build` (atomic, with a marker holding the fingerprint), or the one an
    earlier run left (checked against the fingerprint). Returns True when it was built now."""
    marker = read_marker(folder)
    if marker is not None and marker.get("kind") == kind:
        check_match(marker.get("fingerprint", {}), fingerprint, folder, REMEDY)
        return False
    with atomic_output_dir(folder, kind, fingerprint=fingerprint) as tmp:
        build(tmp)
    return True


def stage_file(path: Path, fingerprint: Mapping[str, Any]) -> None:
    """For stages that resume in place (generation, training): record the fingerprint once, refuse
    another later."""
    recorded = read_json(path)
    if recorded is not None:
        check_match(recorded, fingerprint, path.parent, REMEDY)
    else:
        atomic_write_text(path, json.dumps(fingerprint, indent=1, sort_keys=True) + "\n")


def write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
