"""Cache a run's SeqIO tasks offline (seqio's Beam pipeline): pre-tokenised TFRecords that training reads
without tokenising.

  polyret cache_tasks --gin_file=runs/swimx_xor.gin --gin.VOCABULARY="'/ckpt/mt5_base/tokenizer'" \
      --output_cache_dir=/data/seqio_cache [--tasks NAME,...] [--num_shards 64]
  polyret train --gin_file=runs/swimx_xor.gin ... --gin.DatasetConfig.use_cached=True \
      --gin.DatasetConfig.cache_dirs="['/data/seqio_cache']"

The run's `DatasetConfig.setup` registers the tasks and `MIXTURE_OR_TASK_NAME` selects them (--tasks: a
subset, or other registered tasks). One line per task as it is written. Local output folders are written
whole or not at all and must be new, empty or an earlier cache; --num_shards must be a multiple of the
number of training hosts (each host reads its own files). Beam runs with the DirectRunner in this process
by default; --runner and --pipeline_options (e.g. "--project=p --region=r --temp_location=gs://b/tmp")
pass through to Dataflow / Flink, whose workers register the tasks from the same gin files.
Translate-Distill tasks cannot be cached: their passages are redrawn every epoch.
"""

from __future__ import annotations

import shlex
import sys

from polyret.jobs import common


def main(argv: list[str] | None = None) -> int:
    p = common.parser("polyret cache_tasks", __doc__)
    common.add_gin_flags(p)
    p.add_argument("--output_cache_dir", required=True, help="folder of the cache (seqio's layout, one folder a task)")
    p.add_argument("--tasks", default="", help="comma-separated task names (default: the run's mixture's tasks)")
    p.add_argument("--num_shards", type=common.at_least(1), default=None,
                   help="TFRecord files per task and split (default 64, seqio's minimum)")
    p.add_argument("--runner", default="DirectRunner", help="Beam runner (DirectRunner, DataflowRunner, FlinkRunner)")
    p.add_argument("--pipeline_options", default="", help="further Beam pipeline options, as one quoted string")
    p.add_argument("--skip_cached", action="store_true", help="keep tasks already complete in the folder (resume)")
    args, bindings = common.parse_args_with_gin(p, argv)

    def body() -> None:
        from polyret.seqio_tasks import caching
        if not args.gin_file:
            raise common.UsageError("give the run's --gin_file (its DatasetConfig.setup registers the tasks)")
        if "://" not in args.output_cache_dir:  # refused before any work (cache_tasks checks again)
            from polyret.io.outputs import check_target
            check_target(args.output_cache_dir, caching.KIND)
        common.setup_logging(f"{args.output_cache_dir.rstrip('/')}.log", only_if_warned=True)
        dataset = caching.run_dataset_config(args.gin_file, bindings, args.gin_search_paths)
        if dataset.setup is not None:
            dataset.setup()
        names = [t for t in args.tasks.split(",") if t] or caching.task_names(dataset.mixture_or_task_name)
        setup_fn = caching.RegisterTasks(names, args.gin_file, bindings, args.gin_search_paths)
        caching.cache_tasks(names, args.output_cache_dir, num_shards=args.num_shards or caching.DEFAULT_NUM_SHARDS,
                            runner=args.runner, pipeline_options=shlex.split(args.pipeline_options),
                            setup_fn=setup_fn, skip_cached=args.skip_cached)

    return common.run_main("cache_tasks", body)


if __name__ == "__main__":
    sys.exit(main())
