"""Append-only output files that a killed run can resume without duplicates or gaps.

Records are appended a chunk at a time. After each chunk the files are flushed to disk and a small
state file (written atomically) records their sizes and the caller's progress (items done, counters).
On restart, anything written after the last state — a half-written chunk — is cut off, and the caller
continues from the recorded progress. The state also holds a fingerprint of the run's settings, so a
restart with different settings is refused instead of silently mixing two runs in one file.
`.gz` files get one gzip member per chunk, which keeps them valid at every cut. Known secrets (API keys)
are redacted from every line before it is written.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from polyret.io.disk_space import disk_full_reported
from polyret.io.fingerprint import check_match
from polyret.io.secrets import redact


class ResumableFiles:
    def __init__(self, paths: Mapping[str, str | os.PathLike], state_path: str | os.PathLike,
                 fingerprint: Mapping[str, Any]):
        self.paths = {name: Path(p) for name, p in paths.items()}
        self.state_path = Path(state_path)
        self.fingerprint = json.loads(json.dumps(fingerprint))
        self.progress: dict[str, Any] = {}
        self.complete = False
        if self.state_path.exists():
            state = json.loads(self.state_path.read_text())
            check_match(state["fingerprint"], self.fingerprint, self.state_path,
                        "use another output path, or delete the old files to start over")
            self.progress, self.complete = state["progress"], state.get("complete", False)
            for name, path in self.paths.items():
                with open(path, "ab") as f:  # creates a file the crash left unborn
                    f.truncate(state["bytes"].get(name, 0))
        else:
            for path in self.paths.values():
                if path.exists() and path.stat().st_size:
                    raise ValueError(f"{path} exists but has no {self.state_path.name} beside it: it was not "
                                     "written by this tool, or its state was deleted; refusing to append to it")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"")
            self._save()

    def lines(self, name: str) -> Iterator[str]:
        """Lines already written to one of the files (e.g. to rebuild a duplicate filter on resume)."""
        path = self.paths[name]
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            yield from (line.rstrip("\n") for line in f)

    def append(self, lines: Mapping[str, Sequence[str]], progress: Mapping[str, Any]) -> None:
        """Append whole lines to the named files, then record `progress` as reached."""
        for name, new in lines.items():
            if not new:
                continue
            data = "".join(f"{redact(line)}\n" for line in new).encode("utf-8")
            path = self.paths[name]
            data = gzip.compress(data, mtime=0) if path.suffix == ".gz" else data
            # A full disk: the half-written chunk is cut off on the next run, as after a kill.
            with disk_full_reported(path.parent, len(data), f"a chunk of {path.name}",
                                    "everything recorded before this chunk is kept"), open(path, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        self.progress = json.loads(json.dumps(dict(progress)))
        self._save()

    def finish(self) -> None:
        self.complete = True
        self._save()

    def _save(self) -> None:
        state = {"fingerprint": self.fingerprint, "progress": self.progress, "complete": self.complete,
                 "bytes": {name: path.stat().st_size for name, path in self.paths.items()}}
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        text = json.dumps(state, indent=1, ensure_ascii=False)
        with disk_full_reported(tmp.parent, len(text.encode("utf-8")), self.state_path.name,
                                f"the previous {self.state_path.name} is intact"):
            tmp.write_text(text)
        os.replace(tmp, self.state_path)
