"""Every paper run's bound values, read through gin, against recipe_sources.csv: one row per value (runs, gin
binding, value, the source's URL or path, a quoted line). A run that binds something else fails, unless
recipe_deviations.csv lists that binding with its reason (and a listed deviation that no longer differs fails
too, so the list cannot go stale). README's deviation list names every deviation."""

from __future__ import annotations

import ast
import csv
import inspect
import re
import shutil
from pathlib import Path

import gin
import pytest

from polyret import GIN_CONFIGS_DIR
from polyret.configuration import parse_gin

HERE = Path(__file__).parent
RUNS_DIR = GIN_CONFIGS_DIR / "runs"
README = GIN_CONFIGS_DIR.parent.parent / "README.md"
# The training configurables only (not every module: the run files bind nothing else).
MODULES = ("polyret.models.losses", "polyret.training.trainer", "polyret.seqio_tasks.template_tasks")
PAPER_RUNS = sorted(p.name for p in RUNS_DIR.glob("*.gin") if p.name.startswith(("swimx_", "mtd_", "retrofit_")))


def read_table(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def sources(table: Path = HERE / "recipe_sources.csv") -> dict[str, dict[str, dict]]:
    """{run: {binding: row}} with each row's value parsed; a (run, binding) cited twice is an error."""
    out: dict[str, dict[str, dict]] = {}
    for line, row in enumerate(read_table(table), start=2):
        assert row["source"].strip() and row["quote"].strip(), f"{table}:{line}: a row needs a source and a quote"
        if row["source"].startswith("our choice"):
            assert "because" in row["source"], f"{table}:{line}: 'our choice' says why ('because ...')"
        for run in row["runs"].split():
            assert run not in out or row["binding"] not in out[run], f"{table}:{line}: {run} {row['binding']} twice"
            out.setdefault(run, {})[row["binding"]] = {**row, "value": ast.literal_eval(row["value"]), "line": line}
    return out


def deviations(table: Path = HERE / "recipe_deviations.csv") -> dict[tuple[str, str], str]:
    out = {}
    for line, row in enumerate(read_table(table), start=2):
        assert len(row["reason"]) > 20, f"{table}:{line}: a deviation needs its reason"
        for run in row["runs"].split():
            out[(run, row["binding"])] = row["reason"]
    return out


def bound_value(key: str):
    """What the parsed run binds for `key`, else the configurable's own default (what the run would use)."""
    try:
        value = gin.query_parameter(key)
    except ValueError:
        selector, name = key.rsplit(".", 1)
        # gin has no public lookup of an unbound parameter's default: read the configurable's signature.
        configurable = gin.config._REGISTRY.get_match(selector)  # noqa: SLF001
        default = inspect.signature(configurable.wrapped).parameters[name].default
        if default is inspect.Parameter.empty:
            raise
        return default
    if isinstance(value, gin.config.ConfigurableReference):
        return value.selector.split(".")[-1]
    return value


def same(bound, cited) -> bool:
    if isinstance(cited, float) and isinstance(bound, (int, float)):
        return bound == pytest.approx(cited, rel=1e-9)
    return bound == cited


def check_run(path: Path, cited: dict[str, dict], allowed: dict[tuple[str, str], str]) -> list[str]:
    """Problems of one run file (named by its file name in the tables): values that depart from the cited
    source without a listed deviation, and listed deviations that no longer differ."""
    parse_gin([str(path)], modules=MODULES, finalize=False)
    try:
        problems = []
        for key, row in cited.items():
            bound, reason = bound_value(key), allowed.get((path.name, key))
            if reason is None and not same(bound, row["value"]):
                problems.append(f"{path.name}: {key} = {bound!r}, but recipe_sources.csv:{row['line']} cites "
                                f"{row['value']!r} ({row['source']}: {row['quote']})")
            if reason is not None and same(bound, row["value"]):
                problems.append(f"{path.name}: {key} now matches its source: remove it from recipe_deviations.csv")
        return problems
    finally:
        gin.clear_config()


@pytest.mark.parametrize("run", PAPER_RUNS)
def test_run_binds_its_cited_values(run):
    cited = sources()
    assert run in cited, f"{run}: no rows in recipe_sources.csv"
    problems = check_run(RUNS_DIR / run, cited[run], deviations())
    assert not problems, "\n".join(problems)


def test_a_changed_value_fails(tmp_path):
    """A copy of a run file with one value changed (as a user editing it would) is caught, with the row it
    departs from; the same copy passes once the change is listed as a deviation."""
    copy = tmp_path / "swimx_xor.gin"
    shutil.copy(RUNS_DIR / "swimx_xor.gin", copy)
    text = copy.read_text()
    assert "BATCH_SIZE = 4096" in text
    copy.write_text(text.replace("BATCH_SIZE = 4096", "BATCH_SIZE = 2048"))
    cited = sources()["swimx_xor.gin"]
    problems = check_run(copy, cited, deviations())
    assert len(problems) == 1 and "%BATCH_SIZE = 2048" in problems[0] and "cites 4096" in problems[0]
    assert check_run(copy, cited, {("swimx_xor.gin", "%BATCH_SIZE"): "a smaller pod slice"}) == []
    # A value that only its default sets (the run file does not bind it) is checked too.
    copy.write_text(text.replace("ContrastiveLoss.mask_duplicate_positives = False", ""))
    assert any("mask_duplicate_positives = True" in p for p in check_run(copy, cited, deviations()))


def test_every_paper_run_is_in_the_table_and_every_category_is_cited():
    cited = sources()
    assert set(PAPER_RUNS) <= set(cited) and set(cited) <= set(PAPER_RUNS)
    categories = {"lengths": "TASK_FEATURE_LENGTHS", "batch": "BATCH_SIZE", "optimizer": "make_optimizer.optimizer",
                  "schedule": "learning_rate_schedule.schedule", "precision": ".dtype"}
    for run in PAPER_RUNS:
        for category, needle in categories.items():
            assert any(needle in key for key in cited[run]), f"{run}: no {category} row"
    for run in PAPER_RUNS:
        keys = " ".join(cited[run])
        assert "pooling" in keys or "ColBERTConfig" in keys, f"{run}: no pooling / late-interaction row"
        assert "logit_scale" in keys or "temperature" in keys or run.startswith("retrofit"), f"{run}: no temperature"
        assert "MTD_PASSAGES" in keys or "TASK_FEATURE_LENGTHS" in keys, f"{run}: no negatives row"


def test_each_value_in_a_run_file_has_its_source_beside_it():
    """Every binding line of a paper run file carries a comment, on its line or in the comment block above it,
    and no run file points outside the repository."""
    for run in PAPER_RUNS:
        lines = (RUNS_DIR / run).read_text().splitlines()
        assert "DESIGN.md" not in "\n".join(lines), run
        for i, line in enumerate(lines):
            if not line.strip() or line.startswith(("#", "include", "import", " ")):
                continue
            if re.search(r"%gin\.REQUIRED|^DatasetConfig\.setup|^mtd_data_setup\.\w+ = %|^mc4_data_setup\.\w+ = %",
                         line):
                continue  # wiring, not a recipe value
            above = next((lines[j] for j in range(i - 1, -1, -1) if not lines[j].startswith(" ")), "")
            assert "#" in line or above.startswith("#"), f"{run}:{i + 1}: no source beside {line!r}"


def test_readme_lists_every_deviation():
    section = README.read_text().split("Deviations that remain", 1)[1].split("\n## ", 1)[0]
    for (_, binding) in deviations():
        assert binding in section, f"README's 'Deviations that remain' does not name {binding}"
