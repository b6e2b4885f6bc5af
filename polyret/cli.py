"""`polyret <job> [flags]`: the same as `python -m polyret.jobs.<job> [flags]`."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import polyret.jobs


NOT_JOBS = {"common"}  # what the jobs share (flags, logging, the error path), not a job


def available_jobs() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(polyret.jobs.__path__)
                  if not m.name.startswith("_") and m.name not in NOT_JOBS)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    jobs = available_jobs()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in jobs:
        if argv and argv[0] not in ("-h", "--help"):
            print(f"polyret: unknown job {argv[0]!r}", file=sys.stderr)
        print("usage: polyret <job> [flags]   (each job: polyret <job> --help)\njobs: " + ", ".join(jobs),
              file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    # A job's one line per stage reaches a redirected log (nohup ... > job.log) as it is printed, not at exit.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    module = importlib.import_module(f"polyret.jobs.{argv[0]}")
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
