"""The demo: train, evaluate, mine, retrain, export and reload a multilingual retriever on CPU in minutes.

  python -m polyret.jobs.demo --workdir /tmp/polyret_demo
Run it again after an interruption: finished stages are kept and training resumes from its checkpoints.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="polyret demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--size", choices=["default", "ci"], default="default", help="ci: a much smaller run")
    p.add_argument("--languages", default=None, help="comma-separated subset of en,de,fr,ru,ja,zh,ar")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from polyret.demo import run_demo
    languages = tuple(args.languages.split(",")) if args.languages else None
    run_demo(args.workdir, args.size, languages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
