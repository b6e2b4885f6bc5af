"""Run a study: a paper's finding as an experiment (arms x seeds), with a significance-tested report.

  python -m polyret.jobs.study --gin_file=studies/mtd_vs_mtt.gin --size ci --output_dir /tmp/mtd_vs_mtt

Sizes: ci (template data, minutes), cpu (the real-text Debian set from the pretrained MiniLM, about an hour
on 2 cores), paper (the papers' settings, for accelerators). Every arm x seed is an ordinary run folder under
DIR/runs/ARM/seedS (training resumes after a kill; finished runs are reused; a run whose settings changed is
refused). Writes DIR/report.md, DIR/report.json and PNG plots; the console shows one line per arm and seed,
then the table and the verdict. `--gin.Study.seeds=[0]` and other `--gin.NAME=VALUE` bindings apply to the
study file; library messages go to DIR/study.log. `--dry_run` checks the study (every run's gin, equal steps,
shared settings) and prints its plan without data or training: the paper size can be checked on a laptop.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from polyret.jobs import common


def main(argv: list[str] | None = None) -> int:
    p = common.parser("polyret study", __doc__)
    common.add_gin_flags(p)
    p.add_argument("--size", choices=["ci", "cpu", "paper"], required=True)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--progress", action="store_true", help="training progress bars")
    p.add_argument("--dry_run", action="store_true",
                   help="check every run's gin, equal steps and shared settings, print the plan; no data, no training")
    args, bindings = common.parse_args_with_gin(p, argv)
    if len(args.gin_file) != 1:
        p.error("argument --gin_file: give exactly one study file (e.g. studies/mtd_vs_mtt.gin)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    common.setup_logging(Path(args.output_dir) / "study.log", only_if_warned=True)

    def body() -> None:
        from polyret.experiments.report import arm_table, write_report
        from polyret.experiments.study import load_study, report_spec, run_study

        study = load_study(args.gin_file[0], args.size, bindings, args.gin_search_paths)
        if args.dry_run:
            from polyret.experiments.study import dry_run_study
            print(f"{study.name} ({args.size}): the plan checks out\n{dry_run_study(study, args.output_dir, args.size)}")
            return
        if args.size == "paper":
            print(f"note: the paper size is sized for accelerators ({study.notes or 'see the study file'})")
        result = run_study(study, args.output_dir, args.size, progress=args.progress)
        from polyret.experiments.report import build_report
        report = build_report(result.scores, report_spec(study, args.size), result.shared)
        _, plots = write_report(report, args.output_dir)
        print(f"\n{study.name} ({args.size}), {report['primary_set']}:\n{arm_table(report)}")
        print(f"verdict: {report['verdict']} — {report['verdict_reason']}")
        out = Path(args.output_dir)
        print(f"report: {out / 'report.md'}, {out / 'report.json'}; plots: {', '.join(str(x) for x in plots)}")

    return common.run_main("study", body)


if __name__ == "__main__":
    sys.exit(main())
