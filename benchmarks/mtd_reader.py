"""Peak memory of the Translate-Distill reader on a 1M-passage x 3-language collection.

  nice -n 10 python benchmarks/mtd_reader.py [--passages 1000000] [--queries 100000] [--examples 20000]

Writes three row-aligned collection TSVs (MS MARCO-like: integer ids, ~60 words a passage), a gzipped
hltcoe-style teacher score file (top 50 per query) and a queries TSV, then, each in a fresh process:
- offset index: `polyret.seqio_tasks.examples.DistillationData` (offsets + mmap), then draws `--examples`
  examples (mix passages, 6 of 50);
- in memory: the reader polyret had before (`read_id_text` of every collection into dicts), same draws.
Reports peak anonymous memory (RssAnon: what the process holds beyond the page cache, sampled every
20 ms) and peak RSS (VmHWM, which also counts mapped file pages the kernel may drop), side by side.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

WORDS = ("the of and to in a is was for on as with by that from at his an were are which this be or has had "
         "first new one their its also after but two city time year film school state during who world river "
         "family team group system music house series people national church village area district").split()


def write_files(folder: Path, passages: int, queries: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    langs = ("fa", "ru", "zh")
    if not (folder / "scores.jsonl.gz").exists():
        words = np.array(WORDS)
        for lang in langs:
            with open(folder / f"{lang}.tsv", "w", encoding="utf-8") as f:
                for start in range(0, passages, 10000):
                    n = min(10000, passages - start)
                    lengths = rng.integers(40, 80, size=n)
                    picks = rng.integers(len(words), size=(n, 80))
                    f.write("".join(f"{start + i}\t{lang} " + " ".join(words[picks[i, :lengths[i]]]) + "\n"
                                    for i in range(n)))
        with open(folder / "queries.tsv", "w") as f:
            f.write("".join(f"{q}\twhat is {WORDS[q % len(WORDS)]} number {q}\n" for q in range(queries)))
        with gzip.open(folder / "scores.jsonl.gz", "wt") as f:
            for q in range(queries):
                pids = rng.choice(passages, 50, replace=False)
                scores = np.sort(rng.normal(size=50))[::-1]
                f.write(json.dumps([str(q)] + [[str(p), round(float(s), 4)] for p, s in zip(pids, scores)]) + "\n")
    return {"score_file": folder / "scores.jsonl.gz", "queries": folder / "queries.tsv",
            "collections": {lang: folder / f"{lang}.tsv" for lang in langs}}


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _measure(kind: str, files: dict, examples: int, out: mp.Queue) -> None:
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _status("RssAnon"))
            time.sleep(0.02)

    base = _status("RssAnon")
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.time()
    if kind == "offset index":
        from polyret.seqio_tasks.examples import DistillationData
        data = DistillationData(files["score_file"], files["queries"], files["collections"], 6, 50)
        loaded = time.time() - start
        stream = data.examples(epoch=0, shuffle=True)
    else:
        from polyret.seqio_tasks.examples import _rng
        from polyret.io.formats import iter_teacher_scores, read_id_text
        queries = read_id_text(files["queries"], with_title=False)
        texts = {lang: read_id_text(path) for lang, path in files["collections"].items()}
        languages = sorted(texts)
        loaded = time.time() - start

        def old_stream():  # the reader polyret had before: every collection in dicts
            for line_no, qid, pairs in iter_teacher_scores(files["score_file"]):
                ranked = sorted(pairs, key=lambda p: -p[1])[:50]
                rng = _rng(0, line_no)
                picked = [ranked[i] for i in sorted(rng.choice(len(ranked), 6, replace=False))]
                langs = [languages[i] for i in rng.integers(len(languages), size=6)]
                yield {"inputs": queries[qid], "passages": [texts[l][p] for (p, _), l in zip(picked, langs)]}
        stream = old_stream()
    n = 0
    for example in stream:
        n += 1
        if n == examples:
            break
    total = time.time() - start
    stop.set()
    thread.join()
    out.put({"kind": kind, "anon_peak": max(peak[0], _status("RssAnon")) - base, "hwm": _status("VmHWM"),
             "load_s": loaded, "examples_per_s": n / max(total - loaded, 1e-9), "examples": n})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--passages", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=100_000)
    p.add_argument("--examples", type=int, default=20_000)
    p.add_argument("--folder", default=None, help="where to write the files (default: a temp folder)")
    args = p.parse_args()
    folder = Path(args.folder or tempfile.mkdtemp(prefix="mtd_reader_"))
    folder.mkdir(parents=True, exist_ok=True)
    t = time.time()
    files = write_files(folder, args.passages, args.queries)
    size = sum(os.path.getsize(f) for f in files["collections"].values())
    print(f"{args.passages:,} passages x 3 languages ({size / 2**30:.2f} GiB of TSV), {args.queries:,} queries "
          f"x top 50; files ready in {time.time() - t:.0f} s ({folder})")
    ctx = mp.get_context("spawn")
    rows = []
    for kind in ("offset index", "in memory (before)"):
        q = ctx.Queue()
        proc = ctx.Process(target=_measure, args=(kind, files, args.examples, q))
        proc.start()
        rows.append(q.get())
        proc.join()
    print("| reader | peak RssAnon (beyond page cache) | peak RSS (VmHWM) | load s | examples/s |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['kind']} | {r['anon_peak'] / 2**20:,.0f} MiB | {r['hwm'] / 2**20:,.0f} MiB | {r['load_s']:.1f} | "
              f"{r['examples_per_s']:,.0f} |")
    print(f"ratio of anonymous memory, in memory / offset index: {rows[1]['anon_peak'] / rows[0]['anon_peak']:.1f}x")


if __name__ == "__main__":
    main()
