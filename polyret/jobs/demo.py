"""The demo: train, evaluate, mine, retrain, export and reload a multilingual retriever on CPU in minutes.

  python -m polyret.jobs.demo --workdir /tmp/polyret_demo
Run it again after an interruption: finished stages are kept and training resumes from its checkpoints.
The console shows one line per stage, progress bars and the results; library messages go to
<workdir>/demo.log.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from polyret.jobs import common

LANGUAGES = ("en", "de", "fr", "ru", "ja", "zh", "ar")


def main(argv: list[str] | None = None) -> int:
    p = common.parser("polyret demo", __doc__)
    p.add_argument("--workdir", required=True)
    p.add_argument("--size", choices=["default", "ci"], default="default", help="ci: a much smaller run")
    p.add_argument("--languages", default=None, help="comma-separated subset of " + ",".join(LANGUAGES))
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    languages = tuple(args.languages.split(",")) if args.languages else None
    unknown = sorted(set(languages or ()) - set(LANGUAGES))
    if unknown:
        p.error(f"argument --languages: {', '.join(unknown)} not among {','.join(LANGUAGES)}")
    # Before TensorFlow, JAX and transformers are imported: no C++ log lines, no per-model loading bars.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    common.setup_logging(Path(args.workdir) / "demo.log")

    def body() -> None:
        from polyret.experiments.template_demo import run_demo
        run_demo(args.workdir, args.size, languages)

    return common.run_main("demo", body)


if __name__ == "__main__":
    sys.exit(main())
