"""SAP generation as an Apache Beam pipeline, for corpora of millions of passages.

The same steps as `generate.generate_sap`, distributed: read the corpus shards, bottom-k sample per
language (the N smallest of the same hash keys, so the same passages), generate in batches on
the workers (each builds its own LLM backend from the picklable `BackendConfig`), filter, drop
duplicates per language keeping the passage with the smallest key (what the plain pipeline keeps; not with
`FilterConfig.drop_duplicates=False`), and write sharded JSONL. Counts of kept and dropped items come back as
Beam metrics.

Runs on DirectRunner here; the same pipeline runs on Dataflow, Flink or Spark with their pipeline
options (`--runner=DataflowRunner --project=... --region=... --temp_location=gs://...`). Unlike the
plain pipeline it does not resume a killed job by itself: the runner retries failed bundles.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any, Callable, Iterator, Mapping, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from polyret.synthesis.exemplars import Exemplar
from polyret.synthesis.filters import FilterConfig, QueryFilter, normalize_query
from polyret.synthesis.generate import SapConfig, SapGenerator
from polyret.synthesis.llm import BackendConfig
from polyret.synthesis.sampling import parse_passage, sample_key

NAMESPACE = "polyret_sap"


def _read_shard(path: str, languages: Sequence[str], seed: int) -> Iterator[tuple[str, tuple]]:
    with FileSystems.open(path) as raw:
        for line_no, line in enumerate(io.TextIOWrapper(raw, encoding="utf-8"), 1):
            if (passage := parse_passage(path, line_no, line)) is not None:
                for lang in languages:
                    yield lang, (sample_key(seed, lang, passage["passage_id"]), passage["passage_id"], passage)


class _Generate(beam.DoFn):
    def __init__(self, exemplars, config, filter_config, safety, backend_config, exemplar_path):
        self.args = (exemplars, config, filter_config, safety, exemplar_path)
        self.backend_config = backend_config

    def setup(self):
        exemplars, config, filter_config, safety, exemplar_path = self.args
        self.generator = SapGenerator(exemplars, config, QueryFilter(filter_config, safety), exemplar_path)
        self.backend = self.backend_config.build()

    def teardown(self):
        getattr(self.backend, "close", lambda: None)()

    def process(self, batch: list[dict[str, Any]]):
        completions = self.backend.generate([self.generator.prompt(item) for item in batch])
        for item, completion in zip(batch, completions):
            record, reason = self.generator.record(item, completion)
            if record is None:
                Metrics.counter(NAMESPACE, f"dropped_{reason}").inc()
            else:
                yield (record["code"], normalize_query(record["query"])), (item["key"], record)


def _first_of_duplicates(group: tuple[Any, Sequence[tuple[int, dict]]]) -> dict[str, Any]:
    _, keyed = group
    if len(keyed) > 1:
        Metrics.counter(NAMESPACE, "dropped_duplicate").inc(len(keyed) - 1)
    Metrics.counter(NAMESPACE, "kept").inc()
    return min(keyed, key=lambda kr: kr[0])[1]


def _kept(keyed: tuple[Any, tuple[int, dict]]) -> dict[str, Any]:
    Metrics.counter(NAMESPACE, "kept").inc()
    return keyed[1][1]


def run_beam_sap(corpora: Mapping[str, str], exemplars: Sequence[Exemplar], backend_config: BackendConfig,
                 config: SapConfig, output_prefix: str, filter_config: FilterConfig | None = None,
                 safety: Callable[[str], bool] | None = None, pipeline_args: Sequence[str] = (),
                 num_shards: int = 0, exemplar_path: str | os.PathLike = "exemplars") -> dict[str, int]:
    """Runs the pipeline to completion; output shards are `<output_prefix>-SSSSS-of-NNNNN.jsonl`.
    Returns the counters (kept, dropped_<reason>)."""
    SapGenerator(exemplars, config, QueryFilter(filter_config), exemplar_path)  # fail fast on bad exemplars
    languages_by_file: dict[str, list[str]] = {}
    for lang in config.languages:
        matches = FileSystems.match([os.fspath(corpora[lang])])[0].metadata_list
        if not matches:
            raise FileNotFoundError(f"{corpora[lang]}: no corpus files match (language {lang!r})")
        for match in matches:
            languages_by_file.setdefault(match.path, []).append(lang)
    options = PipelineOptions(list(pipeline_args))
    with beam.Pipeline(options=options) as pipeline:
        keyed = (pipeline
                 | "Shards" >> beam.Create(sorted(languages_by_file.items()))
                 | "Read" >> beam.FlatMap(lambda shard: _read_shard(shard[0], shard[1], config.seed)))
        # The N smallest keys per language, then the passages at or below the N-th: only (key, id) pairs
        # go through the combiner, so a sample of millions of passages never sits on one worker.
        cutoffs = (keyed
                   | "Keys" >> beam.Map(lambda kv: (kv[0], kv[1][:2]))
                   | "Smallest" >> beam.combiners.Top.SmallestPerKey(config.passages_per_language)
                   | "Cutoff" >> beam.Map(lambda kv: (kv[0], max(kv[1]))))
        generated = (keyed
                     | "Sample" >> beam.Filter(lambda kv, cut: kv[1][:2] <= cut[kv[0]],
                                               cut=beam.pvalue.AsDict(cutoffs))
                     | "Items" >> beam.Map(lambda kv: {"language": kv[0], "key": kv[1][0], **kv[1][2]})
                     | "Spread" >> beam.Reshuffle()
                     | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=config.chunk_size)
                     | "Generate" >> beam.ParDo(_Generate(list(exemplars), config, filter_config, safety,
                                                          backend_config, exemplar_path)))
        if (filter_config or FilterConfig()).drop_duplicates:
            records = generated | "ByQuery" >> beam.GroupByKey() | "Dedup" >> beam.Map(_first_of_duplicates)
        else:
            records = generated | "Kept" >> beam.Map(_kept)
        _ = (records
             | "Json" >> beam.Map(lambda record: json.dumps(record, ensure_ascii=False))
             | "Write" >> beam.io.WriteToText(output_prefix, file_name_suffix=".jsonl", num_shards=num_shards))
    result = pipeline.result
    counters = result.metrics().query()["counters"]
    return {c.key.metric.name: c.committed for c in counters if c.key.metric.namespace == NAMESPACE}
