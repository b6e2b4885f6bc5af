"""Kill jobs at random moments (SIGKILL) and check that nothing is lost: after each kill the output is the
previous one intact or the new one complete (for resumable outputs: a consistent prefix of the new one),
never neither; the rerun ends identical to an uninterrupted run and leaves no temp folder behind.

  nice -n 10 .venv/bin/python benchmarks/kill_jobs.py [--kills 20] [--jobs export_hf,import_checkpoint,...]
  nice -n 10 .venv/bin/python benchmarks/kill_jobs.py --sigterm 20     # SIGTERM (preemption) to `polyret train`

Half of the kills fall at a uniform moment of the whole run (start-up included); the other half wait until
the job starts writing (its temp folder or output file appears) and then fall at a uniform moment of the
writing phase, where a kill can do harm. Prints a table for the README. tests/jobs/test_kill_jobs.py runs
the same harness with a few kills per job.

--sigterm N: N SIGTERMs, each at a uniformly drawn step of a tiny `polyret train` run (the step is read off
its progress bar): the run must exit 143 with `preempted at step S; checkpoint written; ...`, its latest
checkpoint must be step S, S must not be behind the step the bar showed when the signal was sent (steps
lost beyond the step in flight: the difference), and the rerun must end bit-identical (parameters and
optimizer state) to an uninterrupted run. A signal that lands during the last step lets the run end normally
(exit 0, complete); that is counted apart. tests/training/test_faults.py runs one such signal.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "synthesis"))  # the local OpenAI-compatible test server
sys.path.insert(0, str(ROOT / "tests" / "training"))  # the train job followed by its progress bar
PROGRESS = re.compile(r"\d+%\|.*\| *\d+/\d+ \[")  # a tqdm bar
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3", "HF_HUB_OFFLINE": "1",
       "TRANSFORMERS_OFFLINE": "1"}


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under folder (hidden marker included) -> bytes."""
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(target: Path) -> list[str]:
    """Temp or staging folders a run left beside the target."""
    return sorted(p.name for p in target.parent.glob(f".{target.name}.polyret-*"))


def run(argv: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


class Case:
    """One job under test: how to prepare its inputs and previous output, its command, and what a state
    after a kill may look like."""

    name = ""

    def __init__(self, work: Path):
        self.work = work

    def prepare(self) -> None:
        """Inputs, the reference output of an uninterrupted run, and anything that never changes."""

    def reset(self) -> Path:
        """Put the previous output (if any) at the target; returns the target."""
        raise NotImplementedError

    def command(self, target: Path) -> list[str]:
        raise NotImplementedError

    def started_writing(self, target: Path) -> bool:
        return bool(leftovers(target))

    def check_after_kill(self, target: Path) -> str:
        """'previous', 'new', 'partial' (resumable and consistent) or raises AssertionError."""
        raise NotImplementedError

    def check_final(self, target: Path) -> None:
        raise NotImplementedError


# ------------------------------------------------------------------------------------------ the cases

def _tiny_checkpoints(folder: Path) -> dict[str, Path]:
    import jax
    from polyret.models.model_folder import save_model
    from polyret.models.retrieval_model import init_params
    from polyret.models.t5 import PRESETS
    from polyret.models.towers import DualEncoderConfig
    from polyret.seqio_tasks.templates import write_template_dataset
    from polyret.seqio_tasks.vocab import train_sentencepiece

    data = write_template_dataset(folder / "data", num_entities=40, languages=("en", "de"))
    spm = train_sentencepiece([data["text"]], folder / "spm", vocab_size=200)
    cfg = DualEncoderConfig(encoder=PRESETS["mt5_tiny"], projection_dim=8)
    out = {name: save_model(folder / name, init_params(cfg, jax.random.PRNGKey(seed))[0], cfg, spm)
           for name, seed in (("ckpt_a", 0), ("ckpt_b", 1))}
    out["corpus_de"], out["corpus_en"] = data["corpus"] / "de.jsonl", data["corpus"] / "en.jsonl"
    return out


class ExportHF(Case):
    name = "export_hf"

    def prepare(self):
        self.inputs = _tiny_checkpoints(self.work / "inputs")
        for name in ("a", "b"):
            proc = run(["polyret.jobs.export_hf", "--checkpoint", str(self.inputs[f"ckpt_{name}"]), "--output_dir",
                        str(self.work / f"ref_{name}")])
            assert proc.returncode == 0, proc.stderr
        self.ref = {name: tree(self.work / f"ref_{name}") for name in ("a", "b")}

    def reset(self):
        target = self.work / "target"
        shutil.rmtree(target, ignore_errors=True)
        for p in leftovers(target):
            shutil.rmtree(target.parent / p)
        shutil.copytree(self.work / "ref_a", target)
        return target

    def command(self, target):
        return ["polyret.jobs.export_hf", "--checkpoint", str(self.inputs["ckpt_b"]), "--output_dir", str(target)]

    def check_after_kill(self, target):
        now = tree(target)
        for state, ref in (("previous", self.ref["a"]), ("new", self.ref["b"])):
            if now == ref:
                return state
        raise AssertionError(f"{target}: neither the previous export nor the new one ({sorted(now)[:5]})")

    def check_final(self, target):
        assert tree(target) == self.ref["b"], "rerun differs from an uninterrupted export"
        assert leftovers(target) == [], leftovers(target)


class ImportCheckpoint(ExportHF):
    name = "import_checkpoint"

    def prepare(self):
        self.inputs = _tiny_checkpoints(self.work / "inputs")
        for name in ("a", "b"):
            proc = run(["polyret.jobs.export_hf", "--checkpoint", str(self.inputs[f"ckpt_{name}"]), "--output_dir",
                        str(self.work / f"hf_{name}")])
            assert proc.returncode == 0, proc.stderr
            proc = run(["polyret.jobs.import_checkpoint", "--hf", str(self.work / f"hf_{name}"), "--output_dir",
                        str(self.work / f"ref_{name}")])
            assert proc.returncode == 0, proc.stderr
        self.ref = {name: self._params(self.work / f"ref_{name}") for name in ("a", "b")}

    @staticmethod
    def _params(folder: Path):
        import numpy as np
        from flax import traverse_util
        from polyret.models.model_folder import load_model
        params, config, _ = load_model(folder)
        flat = traverse_util.flatten_dict(params)
        return {"/".join(k): np.asarray(v) for k, v in flat.items()}, repr(config), (folder / "spiece.model").read_bytes()

    def command(self, target):
        return ["polyret.jobs.import_checkpoint", "--hf", str(self.work / "hf_b"), "--output_dir", str(target)]

    def _same(self, got, ref) -> bool:
        import numpy as np
        return (got[1:] == ref[1:] and got[0].keys() == ref[0].keys()
                and all(np.array_equal(got[0][k], ref[0][k]) for k in ref[0]))

    def check_after_kill(self, target):
        got = self._params(target)  # must load: a half-written checkpoint fails here
        for state in ("a", "b"):
            if self._same(got, self.ref[state]):
                return {"a": "previous", "b": "new"}[state]
        raise AssertionError(f"{target}: loads, but as neither the previous import nor the new one")

    def check_final(self, target):
        assert self._same(self._params(target), self.ref["b"]), "rerun differs from an uninterrupted import"
        assert leftovers(target) == [], leftovers(target)


class Encode(ExportHF):
    """Embeddings of another corpus and checkpoint replace earlier ones (--overwrite): staged beside the
    target, resumed there after a kill, swapped in when complete."""
    name = "encode"

    def _argv(self, ckpt, corpus, target, *extra):
        return ["polyret.jobs.encode", "--checkpoint", str(ckpt), "--corpus", str(corpus), "--output_dir",
                str(target), "--shard_size", "8", "--max_length", "24", "--batch_size", "8", *extra]

    def prepare(self):
        self.inputs = _tiny_checkpoints(self.work / "inputs")
        for name, ckpt, corpus in (("a", "ckpt_a", "corpus_de"), ("b", "ckpt_b", "corpus_en")):
            proc = run(self._argv(self.inputs[ckpt], self.inputs[corpus], self.work / f"ref_{name}"))
            assert proc.returncode == 0, proc.stderr
        self.ref = {name: tree(self.work / f"ref_{name}") for name in ("a", "b")}

    def command(self, target):
        return self._argv(self.inputs["ckpt_b"], self.inputs["corpus_en"], target, "--overwrite")

    def check_after_kill(self, target):
        state = super().check_after_kill(target)
        staged = [target.parent / p for p in leftovers(target)]
        for folder in staged:  # what the rerun resumes from: finished shards of the new run, byte-exact
            for name, data in tree(folder).items():
                if name.startswith("shard-") and ".tmp" not in name:
                    assert self.ref["b"].get(name) == data, f"{folder / name} differs from the new run's shard"
        return "partial" if state == "previous" and staged else state


class GenerateSap(Case):
    """SAP queries against a local OpenAI-compatible server; the output is appended chunk by chunk."""
    name = "generate_sap"

    def prepare(self):
        from chat_server import ChatServer
        from sap_helpers import scripted, write_corpus

        self.corpus = write_corpus(self.work / "corpus.jsonl")
        slow = lambda body, attempt: (time.sleep(0.05), scripted(body, attempt))[1]  # noqa: E731
        self.server = ChatServer(slow).__enter__()
        ref = self.work / "ref.jsonl"
        proc = run(self.command(ref))
        assert proc.returncode == 0, proc.stderr
        self.ref = self._files(ref)

    def _files(self, output: Path) -> dict[str, bytes]:
        return {s: output.with_name(output.name + s).read_bytes() if output.with_name(output.name + s).exists()
                else b"" for s in ("", ".rejected.jsonl")}

    def reset(self):
        target = self.work / "out.jsonl"
        for p in self.work.glob("out.jsonl*"):
            p.unlink()
        return target

    def command(self, target):
        return ["polyret.jobs.generate_sap", "--corpus", str(self.corpus), "--languages", "de,fr", "--model",
                "scripted", "--base_url", self.server.base_url, "--output", str(target),
                "--passages_per_language", "12", "--seed", "5", "--chunk_size", "2", "--concurrency", "2",
                "--max_retries", "2", "--timeout", "5", "--initial_backoff", "0.01", "--langid_languages",
                "en,de,fr"]

    def started_writing(self, target):
        return target.with_name(target.name + ".state.json").exists()

    def check_after_kill(self, target):
        state_file = target.with_name(target.name + ".state.json")
        if not state_file.exists():
            assert not target.exists() or target.stat().st_size == 0
            return "previous"
        state = json.loads(state_file.read_text())
        for suffix, name in (("", "records"), (".rejected.jsonl", "rejected")):
            kept = target.with_name(target.name + suffix).read_bytes()[:state["bytes"][name]]
            assert self.ref[suffix].startswith(kept), f"{target}{suffix}: recorded part is not a prefix of the new file"
        return "new" if state.get("complete") else "partial"

    def check_final(self, target):
        assert self._files(target) == self.ref, "rerun differs from an uninterrupted run"

    def close(self):
        self.server.__exit__(None, None, None)


class Demo(Case):
    """The demo at CI size, 2 languages: every stage resumes; the final results equal an uninterrupted run."""
    name = "demo"

    def _argv(self, workdir):
        return ["polyret.jobs.demo", "--workdir", str(workdir), "--size", "ci", "--languages", "en,de"]

    def prepare(self):
        # The reference run also gives the timing (a demo is too long to run once more just to time it).
        target = self.work / "ref"
        with open(self.work / "ref.out", "w") as out, open(self.work / "ref.err", "w") as err:
            proc = subprocess.Popen([sys.executable, "-m", *self._argv(target)], cwd=ROOT, env=ENV, stdout=out,
                                    stderr=err, text=True)
            start, began = time.monotonic(), None
            while proc.poll() is None:
                if began is None and self.started_writing(target):
                    began = time.monotonic()
                time.sleep(0.05)
            end = time.monotonic()
        self.timing = ((began or end) - start, max(end - (began or end), 0.01))
        proc.stdout, proc.stderr = (self.work / "ref.out").read_text(), (self.work / "ref.err").read_text()
        assert proc.returncode == 0, proc.stderr[-3000:]
        self.ref = json.loads((self.work / "ref" / "results.json").read_text())
        # The console fits on one screen apart from progress bars; library messages are in demo.log.
        stdout = proc.stdout.strip().splitlines()
        assert len(stdout) <= 40, f"{len(stdout)} lines on stdout"
        noise = [line for line in re.split(r"[\r\n]+", proc.stderr) if line.strip() and not PROGRESS.search(line)]
        assert noise == [], noise[:10]
        assert "uncached FunctionDataset" in (self.work / "ref" / "demo.log").read_text()

    def reset(self):
        target = self.work / "target"
        shutil.rmtree(target, ignore_errors=True)
        return target

    def command(self, target):
        return self._argv(target)

    def started_writing(self, target):
        return (target / "round1").exists()

    def check_after_kill(self, target):
        from polyret.io.outputs import read_marker
        for stage, kind in (("data", "demo_data"), ("untrained", "checkpoint"), ("hf_export", "hf_export")):
            if (target / stage).exists():
                marker = read_marker(target / stage)
                assert marker is not None and marker["kind"] == kind, f"{target / stage}: incomplete stage"
        for cached in (target / "eval_cache").glob("*.json") if (target / "eval_cache").is_dir() else []:
            json.loads(cached.read_text())  # never half a file
        return "new" if (target / "results.json").exists() else "partial"

    def check_final(self, target):
        got = json.loads((target / "results.json").read_text())
        assert got == self.ref, "rerun's results differ from an uninterrupted run"
        for stage in ("data", "untrained", "hf_export"):
            assert leftovers(target / stage) == [], leftovers(target / stage)


CASES: dict[str, Callable[[Path], Case]] = {c.name: c for c in (ExportHF, ImportCheckpoint, Encode, GenerateSap,
                                                                Demo)}


# ------------------------------------------------------------------------------------------ the harness

def measure(case: Case) -> tuple[float, float]:
    """(seconds to the start of writing, seconds of writing) of an uninterrupted run."""
    target = case.reset()
    proc = subprocess.Popen([sys.executable, "-m", *case.command(target)], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start, began = time.monotonic(), None
    while proc.poll() is None:
        if began is None and case.started_writing(target):
            began = time.monotonic()
        time.sleep(0.002)
    end = time.monotonic()
    began = began or end
    return began - start, max(end - began, 0.01)


def kill_once(case: Case, rng: random.Random, armed: bool, total: float) -> tuple[str, float]:
    """Start the job, SIGKILL it (at a uniform moment, or once it writes), check, rerun, check."""
    target = case.reset()
    proc = subprocess.Popen([sys.executable, "-m", *case.command(target)], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.monotonic()
    if armed:
        while proc.poll() is None and not case.started_writing(target):
            time.sleep(0.001)
        delay = rng.uniform(0, case.window)
    else:
        delay = rng.uniform(0, total)
    time.sleep(delay)
    moment = time.monotonic() - start
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = case.check_after_kill(target) if proc.returncode == -signal.SIGKILL else "finished"
    rerun = run(case.command(target), timeout=1200)
    assert rerun.returncode == 0, f"rerun failed:\n{rerun.stderr[-3000:]}"
    case.check_final(target)
    return state, moment


def run_case(name: str, kills: int, work: Path, seed: int = 0, log: Callable[[str], None] = print,
             minutes: float | None = None) -> dict:
    """`kills` kills of job `name`; with `minutes`, no new kill starts once that much time has passed since
    the first one (the row then reports the kills done)."""
    work.mkdir(parents=True, exist_ok=True)
    case = CASES[name](work)
    case.prepare()
    try:
        to_write, case.window = getattr(case, "timing", None) or measure(case)
        total = to_write + case.window
        rng = random.Random(seed)
        counts: dict[str, int] = {}
        failures = []
        deadline = None if minutes is None else time.monotonic() + 60 * minutes
        done = 0
        for i in range(kills):
            if deadline is not None and time.monotonic() > deadline:
                log(f"  {name}: {minutes} minutes spent, stopping after {done} of {kills} kills")
                break
            done += 1
            try:
                state, moment = kill_once(case, rng, armed=i % 2 == 1, total=total)
            except AssertionError as e:
                failures.append(str(e))
                state, moment = "FAILED", float("nan")
            counts[state] = counts.get(state, 0) + 1
            log(f"  {name} kill {i + 1}/{kills} at {moment:.2f} s: {state}")
        return {"job": name, "kills": done, "seconds": round(total, 1), "states": counts, "failures": failures}
    finally:
        getattr(case, "close", lambda: None)()


def sigterm_train(signals: int, work: Path, seed: int = 0, steps: int = 30,
                  log: Callable[[str], None] = print) -> dict:
    """`signals` SIGTERMs to a tiny `polyret train` run at uniformly drawn steps (see the module docstring)."""
    from polyret.seqio_tasks.template_tasks import template_data_setup
    from training_helpers import TrainJob, checkpoint_arrays, checkpoint_steps, last_line, train_argv

    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    template_data_setup(data, num_entities=60)
    subprocess.run(train_argv(work / "reference", data, steps), cwd=ROOT, env=ENV, check=True,
                   capture_output=True)
    reference = checkpoint_arrays(work / "reference", steps)
    rng = random.Random(seed)
    lost, identical, finished, failures = [], 0, 0, []
    for i in range(signals):
        model_dir = work / f"run{i}"
        target = rng.randint(1, steps - 1)
        job = TrainJob(train_argv(model_dir, data, steps))
        try:
            if not job.wait_for_step(target):
                raise AssertionError(f"the run ended before step {target}: {job.finish()[1][-2000:]}")
            shown = job.step
            os.kill(job.proc.pid, signal.SIGTERM)
            code, stderr = job.finish()
            line = last_line(stderr)
            if code == 0 and shown >= steps - 1 and checkpoint_steps(model_dir)[-1:] == [steps]:
                # the signal landed in the last step, which ends the run normally
                same = _identical(checkpoint_arrays(model_dir, steps), reference)
                finished, identical = finished + 1, identical + same
                log(f"  SIGTERM {i + 1}/{signals} at step {shown}: landed in the last step, run complete, "
                    f"{'identical' if same else 'DIFFERENT'}")
                continue
            if code != 143 or "preempted at step " not in line:
                raise AssertionError(f"exit {code}: {line}")
            saved = int(line.split("preempted at step ")[1].split(";")[0])
            if checkpoint_steps(model_dir)[-1] != saved:
                raise AssertionError(f"latest checkpoint {checkpoint_steps(model_dir)} is not step {saved}")
            lost.append(max(0, shown - saved))
            rerun = subprocess.run(train_argv(model_dir, data, steps), cwd=ROOT, env=ENV, capture_output=True,
                                   text=True)
            if rerun.returncode != 0:
                raise AssertionError(f"rerun failed: {rerun.stderr[-2000:]}")
            same = _identical(checkpoint_arrays(model_dir, steps), reference)
            identical += same
            log(f"  SIGTERM {i + 1}/{signals} at step {shown}: checkpoint of step {saved}, rerun "
                f"{'identical' if same else 'DIFFERENT'}")
        except AssertionError as e:
            failures.append(str(e))
            log(f"  SIGTERM {i + 1}/{signals}: FAILED {e}")
        finally:
            shutil.rmtree(model_dir, ignore_errors=True)
    return {"signals": signals, "steps": steps, "lost": lost, "identical": identical, "finished": finished,
            "failures": failures}


def _identical(got: dict, reference: dict) -> bool:
    import numpy as np
    return got.keys() == reference.keys() and all(np.array_equal(got[k], reference[k]) for k in got)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--jobs", default=",".join(CASES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=None,
                   help="per job: start no new kill after this many minutes (the table reports the kills done)")
    p.add_argument("--sigterm", type=int, default=0, help="instead: this many SIGTERMs to a tiny train run")
    args = p.parse_args()
    if args.sigterm:
        with tempfile.TemporaryDirectory(prefix="polyret_sigterm_") as tmp:
            r = sigterm_train(args.sigterm, Path(tmp), args.seed, log=lambda line: print(line, flush=True))
        print("\n| job | signal | signals | stopped with a checkpoint (exit 143) | landed in the last step (run "
              "complete, exit 0) | steps lost beyond the step in flight | identical to an uninterrupted run |")
        print("|---|---|---:|---:|---:|---:|---:|")
        print(f"| train ({r['steps']} steps) | SIGTERM | {r['signals']} | {len(r['lost'])} | {r['finished']} | "
              f"{sum(r['lost'])} (max {max(r['lost'], default=0)}) | {r['identical']}/{r['signals']} |")
        for failure in r["failures"]:
            print(f"train: {failure}")
        return 0 if not r["failures"] and r["identical"] == r["signals"] else 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="polyret_kills_") as tmp:
        for name in args.jobs.split(","):
            print(f"{name}: preparing and measuring an uninterrupted run", flush=True)
            rows.append(run_case(name, args.kills, Path(tmp) / name, args.seed,
                                 log=lambda line: print(line, flush=True), minutes=args.minutes))
    print("\n| job | kills | uninterrupted run (s) | previous output intact | new output complete | "
          "resumable part (consistent) | finished before the kill | lost or damaged | rerun identical |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        s = r["states"]
        print(f"| {r['job']} | {r['kills']} | {r['seconds']} | {s.get('previous', 0)} | {s.get('new', 0)} | "
              f"{s.get('partial', 0)} | {s.get('finished', 0)} | {s.get('FAILED', 0)} | "
              f"{'yes' if not r['failures'] else 'NO'} |")
    for r in rows:
        for failure in r["failures"]:
            print(f"{r['job']}: {failure}")
    return 0 if all(not r["failures"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
