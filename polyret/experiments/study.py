"""Studies: a paper's finding as an experiment. A study names a base run (gin files), its arms (gin bindings on
top of the base), seeds, prerequisite runs shared by arms (stages), data prepared from a stage (e.g. mined
negatives), evaluation sets and the claim to test. Every arm x seed is an ordinary run folder trained by
`train_from_gin` and evaluated through the retrieval pipeline, so runs resume after a kill, finished runs are
reused, and a run folder started with other settings is refused in one line.

Layout of a study folder DIR:
  DIR/study.json                       the study's name and size (a folder holds one study)
  DIR/data/                            the study's data (`Study.setup`), unless `Study.data_dir` says otherwise
  DIR/stages/NAME/seedS/               prerequisite runs (e.g. round 1, pre-training)
  DIR/prepared/NAME/seedS/             data made from a stage's checkpoint (e.g. mined negatives)
  DIR/runs/ARM/seedS/                  the arm's run folder (checkpoints, config.gin, study_run.json)
  DIR/runs/ARM/seedS/eval/SET.trec     TREC run on each evaluation set
  DIR/runs/ARM/seedS/eval/SET.json     per-query scores {metric: {qid: value}} (written last: the done mark)
  DIR/report.md, report.json, *.png    the report (polyret.experiments.report)

Study files (polyret/gin_configs/studies/) bind `Study.*`; values for one size sit in a gin scope named by
the size (`ci/Study.seeds = [0, 1]`), chosen by `load_study(file, size)`. Strings may hold placeholders:
${work} (the study folder), ${data} (its data folder), ${seed}, ${size}, ${stage:NAME} (that stage's run
folder for this seed) and ${prepared:NAME}; an arm that names a stage trains after it, from it if it says so.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import gin

from polyret.configuration import GinConfigError, parse_gin
from polyret.io import preemption
from polyret.io.benchmarks import load_files
from polyret.io.fingerprint import check_match, read_json
from polyret.io.formats import DataError
from polyret.io.outputs import atomic_write_text

CLAIMS = ("better", "equivalent", "plateau", "none")
SIZES = ("ci", "cpu", "paper")
STUDY_FILE = "study.json"
RUN_FILE = "study_run.json"
_PLACEHOLDER = re.compile(r"\$\{(\w+)(?::([\w.-]+))?\}")


class StudyError(ValueError):
    """A study that cannot run as configured; the message is one line and names the setting."""


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EvalSet:
    """An evaluation set: corpus, queries and qrels files (any format polyret reads)."""

    corpus: str = gin.REQUIRED
    queries: str = gin.REQUIRED
    qrels: str | None = None
    query_max_length: int = 64
    passage_max_length: int = 256


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Prepared:
    """Data made from a stage's checkpoint: `fn(checkpoint_dir, out_dir, data_dir, **kwargs)`."""

    stage: str = gin.REQUIRED
    fn: Callable[..., Any] = gin.REQUIRED
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Study:
    """One finding as an experiment (see the module docstring)."""

    name: str = gin.REQUIRED
    base_gin: Sequence[str] = gin.REQUIRED           # the base run's gin files
    arms: Mapping[str, Sequence[str]] = gin.REQUIRED  # arm -> gin bindings on top of the base
    eval_sets: Mapping[str, EvalSet] = gin.REQUIRED
    claim: str = "none"                               # better | equivalent | plateau | none
    paper_claim: str = ""                             # the finding in the paper's words
    baseline: str | None = None                       # the arm every other arm is tested against
    bindings: Sequence[str] = ()                      # for every run (stages too)
    seeds: Sequence[int] = (0, 1, 2)
    seed_bindings: Sequence[str] = ("train.seed=${seed}", "DatasetConfig.seed=${seed}")
    stages: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
    run_gin: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)  # arm/stage -> own gin files
    prepared: Mapping[str, Prepared] = dataclasses.field(default_factory=dict)
    metric: str = "nDCG@10"                           # the metric the claim is tested on
    metrics: Sequence[str] = ("nDCG@10", "R@10")      # reported
    tost_margin: float | None = None                  # equivalence bounds (+-margin) on `metric`
    alpha: float = 0.05
    sweep: Mapping[str, float] = dataclasses.field(default_factory=dict)  # arm -> x of the curve
    sweep_label: str = ""
    plateau_from: float | None = None                 # plateau claim: arms with x >= this equal the largest
    equal_steps: bool = False                         # every arm trains the same total steps (stages included)
    shared: Sequence[str] = ()                        # gin parameters every arm must share (printed)
    data_dir: str = "${work}/data"
    setup: Callable[[str], Any] | None = None         # writes the study's data: setup(data_dir)
    notes: str = ""                                   # what this size shrinks, and why
    paper_effect: float | None = None                 # the paper's difference (arm - baseline) on `metric`
    paper_effect_source: str = ""                     # where the paper reports it
    reference: str | None = None                      # an arm not trained: its INITIAL_CHECKPOINT_PATH is evaluated
                                                      # (equivalent / plateau need every other arm to beat it)
    paper_relative_effect: float | None = None        # or the paper's effect as a fraction of the baseline's score
    separate_sets: Sequence[str] = ()                 # eval sets reported on their own, not pooled (e.g. MLIR)


def load_study(gin_file: str, size: str, bindings: Sequence[str] = (), search_paths: Sequence[str] = ()) -> Study:
    """Parse a study file and read `Study` in the size's scope. Leaves gin parsed (for `Study.setup`)."""
    if size not in SIZES:
        raise StudyError(f"--size must be one of {', '.join(SIZES)}, got {size!r}")
    parse_gin([gin_file], bindings, search_paths, modules=("polyret.experiments.study",), finalize=False)
    try:
        with gin.config_scope(size):
            return Study()
    except (ValueError, TypeError, RuntimeError) as e:  # a REQUIRED field left unbound (gin: RuntimeError)
        raise StudyError(f"{gin_file} (size {size}): {str(e).splitlines()[0]}") from None


# ------------------------------------------------------------------------------------------------ placeholders

@dataclasses.dataclass(frozen=True)
class Paths:
    work: Path
    data: Path
    size: str

    def stage(self, name: str, seed: int) -> Path:
        return self.work / "stages" / name / f"seed{seed}"

    def prepared(self, name: str, seed: int) -> Path:
        return self.work / "prepared" / name / f"seed{seed}"

    def run(self, arm: str, seed: int) -> Path:
        return self.work / "runs" / arm / f"seed{seed}"


def references(text: str, kind: str) -> list[str]:
    return [m.group(2) for m in _PLACEHOLDER.finditer(text) if m.group(1) == kind]


def substitute(text: str, paths: Paths, seed: int | None = None) -> str:
    def value(m: re.Match) -> str:
        kind, arg = m.group(1), m.group(2)
        if kind == "work":
            return str(paths.work)
        if kind == "data":
            return str(paths.data)
        if kind == "size":
            return paths.size
        if seed is None:
            raise StudyError(f"placeholder {m.group(0)} is only allowed in per-seed settings")
        if kind == "seed":
            return str(seed)
        if kind == "stage":
            return str(paths.stage(arg, seed))
        if kind == "prepared":
            return str(paths.prepared(arg, seed))
        raise StudyError(f"unknown placeholder {m.group(0)} (known: ${{work}}, ${{data}}, ${{size}}, ${{seed}}, "
                         "${stage:NAME}, ${prepared:NAME})")
    return _PLACEHOLDER.sub(value, text)


# ------------------------------------------------------------------------------------------------ the plan

@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run of the study: its gin files, bindings (placeholders resolved) and folder."""

    kind: str    # "stage" or "arm"
    name: str
    seed: int
    folder: Path
    files: tuple[str, ...]
    bindings: tuple[str, ...]
    needs_stages: tuple[str, ...]
    needs_prepared: tuple[str, ...]

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "seed": self.seed, "gin_files": list(self.files),
                "bindings": list(self.bindings)}


def _run_spec(study: Study, paths: Paths, kind: str, name: str, own: Sequence[str], seed: int) -> RunSpec:
    folder = paths.stage(name, seed) if kind == "stage" else paths.run(name, seed)
    raw = list(study.bindings) + list(study.seed_bindings) + list(own)
    stages = tuple(dict.fromkeys(s for b in raw for s in references(b, "stage")))
    prepared = tuple(dict.fromkeys(p for b in raw for p in references(b, "prepared")))
    bindings = [substitute(b, paths, seed) for b in raw] + [f"MODEL_DIR='{folder}'"]
    files = tuple(study.run_gin.get(name, study.base_gin))
    return RunSpec(kind, name, seed, folder, files, tuple(bindings), stages, prepared)


def plan(study: Study, paths: Paths) -> dict[tuple[str, str, int], RunSpec]:
    """Every run the study needs, (kind, name, seed) -> RunSpec, prerequisites first."""
    runs: dict[tuple[str, str, int], RunSpec] = {}

    def add(kind: str, name: str, own: Sequence[str], seed: int, chain: tuple[str, ...] = ()) -> None:
        key = (kind, name, seed)
        if key in runs:
            return
        spec = _run_spec(study, paths, kind, name, own, seed)
        needed = list(spec.needs_stages) + [study.prepared[p].stage for p in spec.needs_prepared
                                            if p in study.prepared]
        for stage in needed:
            if stage not in study.stages:
                raise StudyError(f"{kind} {name!r} refers to stage {stage!r}, which Study.stages does not define")
            if stage in chain:
                raise StudyError(f"stage {stage!r} depends on itself ({' -> '.join(chain + (stage,))})")
            add("stage", stage, study.stages[stage], seed, chain + (stage,))
        for p in spec.needs_prepared:
            if p not in study.prepared:
                raise StudyError(f"{kind} {name!r} refers to ${{prepared:{p}}}, which Study.prepared does not define")
        runs[key] = spec

    for seed in study.seeds:
        for arm, own in study.arms.items():
            add("arm", arm, own, seed)
    return runs


# ------------------------------------------------------------------------------------------------ validation

def _query(name: str) -> Any:
    try:
        return gin.query_parameter(name)
    except ValueError:
        return None


def _parse_run(spec: RunSpec) -> None:
    try:
        parse_gin(spec.files, spec.bindings, finalize=False)
    except GinConfigError as e:
        raise StudyError(f"{spec.kind} {spec.name!r}: {e}") from None


def _total_steps(spec: RunSpec, runs: Mapping[tuple[str, str, int], RunSpec]) -> int:
    _parse_run(spec)
    steps = int(_query("%TRAIN_STEPS") or 0)
    for stage in spec.needs_stages:
        steps += _total_steps(runs[("stage", stage, spec.seed)], runs)
    return steps


def validate(study: Study, paths: Paths, check_files: bool = True) -> tuple[dict, dict[str, dict[str, str]]]:
    """Everything that can be checked before training (one line each): arms, baseline, claim and its
    margin, sweep, evaluation sets and their qrels, every run's gin (unknown names), equal steps and the
    shared settings. -> (the plan, {arm: {shared setting: value}} for the report). Without `check_files`
    (a dry run), the files the study reads (evaluation sets, the reference checkpoint) are not opened."""
    if not study.arms:
        raise StudyError(f"study {study.name!r} has no arms (Study.arms is empty)")
    if study.claim not in CLAIMS:
        raise StudyError(f"Study.claim must be one of {', '.join(CLAIMS)}, got {study.claim!r}")
    if study.baseline is not None and study.baseline not in study.arms:
        raise StudyError(f"Study.baseline {study.baseline!r} is not an arm ({', '.join(study.arms)})")
    if study.claim in ("better", "plateau") and study.baseline is None:
        raise StudyError(f"a {study.claim!r} claim needs Study.baseline")
    if study.claim in ("equivalent", "plateau") and not study.tost_margin:
        raise StudyError(f"study {study.name!r} claims equivalence ({study.claim}) but states no TOST margin: set "
                         "Study.tost_margin (the largest difference in "
                         f"{study.metric} that counts as no difference)")
    trained = set(study.arms) - {study.reference}
    if study.claim == "plateau" and (study.plateau_from is None or set(study.sweep) != trained):
        raise StudyError("a plateau claim needs Study.sweep (an x for every trained arm) and Study.plateau_from")
    try:  # the report's own checks (the TOST margin against the paper's effect, the reference arm), before training
        report_spec(study, paths.size)
    except ValueError as e:
        raise StudyError(str(e)) from None
    if study.reference is not None and check_files:
        for seed in study.seeds:
            _reference_checkpoint(_run_spec(study, paths, "arm", study.reference, study.arms[study.reference], seed))
    unknown_sweep = sorted(set(study.sweep) - trained)
    if unknown_sweep:
        raise StudyError(f"Study.sweep names {unknown_sweep[0]!r}, which is not a trained arm")
    if not study.seeds:
        raise StudyError("Study.seeds is empty")
    both = sorted(set(study.arms) & set(study.stages))
    if both:
        raise StudyError(f"{both[0]!r} names both an arm and a stage; rename one")
    if study.metric not in study.metrics:
        raise StudyError(f"Study.metric {study.metric!r} is not among Study.metrics {list(study.metrics)}")
    from polyret.retrieval.metrics import parse_metrics
    try:
        parse_metrics(study.metrics)
    except Exception as e:  # noqa: BLE001 (ir_measures raises several kinds for a bad name)
        raise StudyError(f"Study.metrics: {e}") from None
    if not study.eval_sets:
        raise StudyError(f"study {study.name!r} has no evaluation sets (Study.eval_sets)")
    unknown = [s for s in study.separate_sets if s not in study.eval_sets]
    if unknown or len(study.separate_sets) >= len(study.eval_sets):
        raise StudyError(f"Study.separate_sets {list(study.separate_sets)}: each must be one of Study.eval_sets "
                         f"({', '.join(study.eval_sets)}), and one set at least must stay pooled")
    for name, es in study.eval_sets.items():
        for field in ("corpus", "queries", "qrels"):
            value = getattr(es, field)
            if not value:
                raise StudyError(f"evaluation set {name!r} has no {field} (EvalSet.{field}); a study scores arms "
                                 "on judged queries only")
            if not check_files:
                continue
            if not Path(substitute(value, paths)).is_file():
                raise StudyError(f"evaluation set {name!r}: {field} file {substitute(value, paths)} not found")
        if not check_files:
            continue
        try:  # every judged query and passage exists (ids only): a bad qrels line stops here, not after an arm
            load_files(substitute(es.corpus, paths), substitute(es.queries, paths), substitute(es.qrels, paths),
                       corpus_texts=False)
        except DataError as e:
            raise StudyError(f"evaluation set {name!r}: {e}") from None
    runs = plan(study, paths)
    shared: dict[str, dict[str, str]] = {}
    steps: dict[str, int] = {}
    try:
        for spec in runs.values():
            _parse_run(spec)  # an unknown gin name in any arm or stage stops here, before any training
            # The reference arm is evaluated, not trained: its steps and training settings are not compared.
            if spec.kind == "arm" and spec.seed == study.seeds[0] and spec.name != study.reference:
                shared[spec.name] = {p: repr(_query(p)) for p in study.shared}
                steps[spec.name] = _total_steps(spec, runs)
    finally:
        gin.clear_config()
    for param in study.shared:
        values = {arm: v[param] for arm, v in shared.items()}
        if len(set(values.values())) > 1:
            raise StudyError(f"arms must share {param} (Study.shared) but differ: "
                             + ", ".join(f"{a}={v}" for a, v in values.items()))
    for arm in shared:
        shared[arm]["total training steps"] = str(steps[arm])
    if study.equal_steps and len(set(steps.values())) > 1:
        raise StudyError("Study.equal_steps: arms train different total steps (stages included): "
                         + ", ".join(f"{a}={s}" for a, s in steps.items()))
    return runs, shared


# ------------------------------------------------------------------------------------------------ running

def _check_run_folder(spec: RunSpec) -> None:
    recorded = read_json(spec.folder / RUN_FILE)
    if recorded is None:
        if spec.folder.exists() and any(spec.folder.iterdir()):
            raise StudyError(f"{spec.folder}: not empty and not a study run; use a new --output_dir")
        spec.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(spec.folder / RUN_FILE, json.dumps(spec.fingerprint(), indent=1) + "\n")
        return
    check_match(recorded, spec.fingerprint(), spec.folder / RUN_FILE,
                "the study's settings for this run changed; use a new --output_dir, or restore them")


def _train(spec: RunSpec, progress: bool) -> None:
    from polyret.training.trainer import train_from_gin
    _check_run_folder(spec)
    train_from_gin(spec.files, spec.bindings, progress=progress)


def _eval_outputs(folder: Path, set_name: str) -> tuple[Path, Path]:
    return folder / "eval" / f"{set_name}.json", folder / "eval" / f"{set_name}.trec"


def _reference_checkpoint(spec: RunSpec) -> str:
    """The reference arm's starting model: its run's INITIAL_CHECKPOINT_PATH, evaluated without training."""
    _parse_run(spec)
    path = _query("%INITIAL_CHECKPOINT_PATH")
    if not path:
        raise StudyError(f"arm {spec.name!r} is Study.reference (evaluated without training) but its run sets no "
                         "INITIAL_CHECKPOINT_PATH to evaluate")
    if not Path(path).exists():
        raise StudyError(f"arm {spec.name!r} is Study.reference: its INITIAL_CHECKPOINT_PATH {path} does not exist")
    return str(path)


def _evaluate(spec: RunSpec, study: Study, paths: Paths, cache: dict,
              checkpoint: str | Path | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """{set: {metric: {qid: value}}} for a trained run (or `checkpoint`, for the reference arm); each set's scores
    written (atomically) once, in the run's folder."""
    from polyret.io.runs import write_trec_run
    from polyret.retrieval import metrics as M
    from polyret.retrieval.encode import TowerEncoder
    from polyret.retrieval.pipeline import load_eval_inputs, retrieve

    out: dict[str, dict[str, dict[str, float]]] = {}
    encoder = None
    for name, es in study.eval_sets.items():
        scores_file, trec_file = _eval_outputs(spec.folder, name)
        record = {"eval_set": {f: substitute(str(getattr(es, f)), paths) for f in ("corpus", "queries", "qrels")},
                  "metrics_asked": list(study.metrics)}
        stored = read_json(scores_file)
        if stored is not None:
            check_match({k: stored[k] for k in record}, record, scores_file,
                        "the evaluation set or metrics changed; use a new --output_dir")
            out[name] = stored["per_query"]
            continue
        if name not in cache:
            cache[name] = load_eval_inputs(*record["eval_set"].values())
        corpus, queries, qrels = cache[name]
        # The reference arm's model is the same for every seed when its path is: retrieved once.
        run = cache.get(("reference run", str(checkpoint), name)) if checkpoint else None
        if run is None:
            judged = {q: queries[q] for q in qrels if qrels[q]}
            # one encoder per run, remembering rows: a passage in several sets' corpora is encoded once
            encoder = encoder or TowerEncoder.from_checkpoint(checkpoint or spec.folder).remember_rows()
            k = max(100, *[int(m.params.get("cutoff") or 0) for m in M.parse_metrics(study.metrics)])
            run = retrieve(encoder, corpus, judged, min(k, len(corpus)), es.query_max_length, es.passage_max_length)
            if checkpoint:
                cache[("reference run", str(checkpoint), name)] = run
        per_query = M.per_query(qrels, run, list(study.metrics))
        trec_file.parent.mkdir(parents=True, exist_ok=True)
        write_trec_run(run, trec_file, tag=f"{spec.name}.seed{spec.seed}")
        atomic_write_text(scores_file, json.dumps({**record, "per_query": per_query}, indent=0, sort_keys=True))
        out[name] = per_query
    return out


def _prepare(study: Study, paths: Paths, name: str, seed: int) -> None:
    """Make a prepared item (once; a DONE file marks it complete)."""
    item = study.prepared[name]
    out = paths.prepared(name, seed)
    if (out / "DONE").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    item.fn(paths.stage(item.stage, seed), out, paths.data, **dict(item.kwargs))
    atomic_write_text(out / "DONE", f"made from {paths.stage(item.stage, seed)}\n")


def check_study_folder(work: Path, study: Study, size: str) -> None:
    """A folder holds one study at one size; another study or size is refused."""
    recorded = read_json(work / STUDY_FILE)
    current = {"study": study.name, "size": size}
    if recorded is None:
        others = sorted(p.name for p in work.iterdir()) if work.is_dir() else []
        if [o for o in others if o not in ("data", "study.log")]:
            raise StudyError(f"{work}: not empty and not a study folder (it holds {', '.join(others[:4])}); "
                             "choose a new --output_dir")
        work.mkdir(parents=True, exist_ok=True)
        atomic_write_text(work / STUDY_FILE, json.dumps(current, indent=1) + "\n")
        return
    check_match(recorded, current, work / STUDY_FILE, "use another --output_dir for another study or size")


@dataclasses.dataclass
class StudyResult:
    study: Study
    size: str
    scores: dict[str, dict[str, dict[int, dict[str, dict[str, float]]]]]  # set -> arm -> seed -> metric -> qid
    shared: dict[str, dict[str, str]]
    seconds: dict[str, float]


def run_study(study: Study, output_dir: str | Path, size: str, progress: bool = False,
              log: Callable[[str], None] = print) -> StudyResult:
    """Validate, then train and evaluate every arm x seed (seed by seed), reusing finished runs."""
    work = Path(output_dir).absolute()
    paths = Paths(work, Path(substitute(study.data_dir, Paths(work, work / "data", size))), size)
    check_study_folder(work, study, size)
    if study.setup is not None:
        study.setup(str(paths.data))
    runs, shared = validate(study, paths)
    scores: dict = {name: {arm: {} for arm in study.arms} for name in study.eval_sets}
    seconds: dict[str, float] = {}
    # SIGTERM/SIGINT: the trainer inside checkpoints and stops (Preempted); between runs the study stops
    # after the run or evaluation in progress is written. The same command resumes.
    with preemption.graceful_stop():
        _run_all(study, paths, runs, scores, seconds, progress, log)
    return StudyResult(study, size, scores, shared, seconds)


def dry_run_study(study: Study, output_dir: str | Path, size: str) -> str:
    """Check a study as `run_study` does, without its data or any training (files are not opened, nothing is
    written): every run's gin, equal steps and the shared settings. -> the plan as a Markdown table."""
    work = Path(output_dir).absolute()
    paths = Paths(work, Path(substitute(study.data_dir, Paths(work, work / "data", size))), size)
    runs, shared = validate(study, paths, check_files=False)
    lines = ["| arm | seeds | gin files | total training steps |", "|---|---|---|---:|"]
    for arm in study.arms:
        files = {", ".join(spec.files) for (kind, name, _), spec in runs.items() if kind == "arm" and name == arm}
        steps = shared.get(arm, {}).get("total training steps", "not trained (reference)")
        lines.append(f"| {arm} | {', '.join(map(str, study.seeds))} | {'; '.join(sorted(files))} | {steps} |")
    if study.shared:
        lines += ["", "| shared setting | value |", "|---|---|"]
        values = next((v for v in shared.values()), {})
        lines += [f"| {param} | {values.get(param, '')} |" for param in study.shared]
    return "\n".join(lines)


def _run_all(study: Study, paths: Paths, runs: Mapping, scores: dict, seconds: dict, progress: bool,
             log: Callable[[str], None]) -> None:
    cache: dict = {}
    done_stages: set[tuple[str, int]] = set()
    resume = "; rerun the same command to resume"
    for seed in study.seeds:
        for arm in study.arms:
            spec = runs[("arm", arm, seed)]
            start = time.time()
            finished = all(_eval_outputs(spec.folder, s)[0].exists() for s in study.eval_sets)
            reference = _reference_checkpoint(spec) if arm == study.reference else None
            if finished or reference:
                _check_run_folder(spec)
            else:
                for stage in spec.needs_stages + tuple(study.prepared[p].stage for p in spec.needs_prepared):
                    if (stage, seed) not in done_stages:
                        _train(runs[("stage", stage, seed)], progress)
                        done_stages.add((stage, seed))
                        preemption.stop_if_requested(f"study stopped after stage {stage} seed {seed}{resume}")
                for p in spec.needs_prepared:
                    _prepare(study, paths, p, seed)
                    preemption.stop_if_requested(f"study stopped after preparing {p} seed {seed}{resume}")
                _train(spec, progress)
                preemption.stop_if_requested(f"study stopped after training {arm} seed {seed}{resume}")
            per_set = _evaluate(spec, study, paths, cache, reference)
            seconds[f"{arm}/seed{seed}"] = time.time() - start
            for name, values in per_set.items():
                scores[name][arm][seed] = values
            line = ", ".join(f"{name} {study.metric} {_mean(values[study.metric]):.4f}" for name, values in per_set.items())
            log(f"{arm} seed {seed}: {line} ({'reused' if finished else f'{time.time() - start:.0f} s'})")
            preemption.stop_if_requested(f"study stopped after {arm} seed {seed}{resume}")


def _mean(values: Mapping[str, float]) -> float:
    return sum(values.values()) / max(len(values), 1)


def report_spec(study: Study, size: str):
    """The report's view of a study (polyret.experiments.report.ReportSpec)."""
    from polyret.experiments.report import ReportSpec
    return ReportSpec(study.name, size, study.claim, study.paper_claim, study.baseline, list(study.arms),
                      list(study.seeds), study.metric, list(study.metrics), study.tost_margin, study.alpha,
                      dict(study.sweep), study.sweep_label, study.plateau_from, study.notes, study.paper_effect,
                      study.paper_effect_source, study.reference, study.paper_relative_effect,
                      list(study.separate_sets))
