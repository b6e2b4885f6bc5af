"""`polyret adapt` on real text: the Debian Reference set (benchmarks/real_text_set.py) with a scripted LLM.

The corpus is the sections of the document languages (default de, fr, ja; ids `de:<anchor>`, a `lang` field).
The queries are asked in English (`--languages en`), so the task is the set's en-X pairs. The scripted
OpenAI-compatible server (tests/synthesis/chat_server.py, real HTTP on localhost) answers SAP prompts the
way a good LLM would for passages of the set's train split (the section's own English heading, after a
summary) and the way a poor one would for every other passage (the passage's first few words). The real
test-split queries are therefore never produced. The job starts from its default base for this corpus
(multilingual-e5-small) and is evaluated on the set's real held-out English headings (the test split), one
query per heading, relevant in every document language that has the section (a `group` per section).

  nice -n 10 python benchmarks/adapt_real_text.py [--set ~/.cache/polyret/debian_reference_set] \
      [--work /tmp/adapt_real_text] [--docs de,fr,ja] [--round1_steps 100] [--round2_steps 50]

Build the set first: python benchmarks/real_text_set.py --languages en,de,fr,ja
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "synthesis"))  # the scripted server


def write_inputs(set_dir: Path, work: Path, docs: list[str]) -> dict[str, object]:
    """corpus.jsonl, eval_queries.jsonl, eval_qrels.tsv in work/inputs, and the server's answer book
    {passage text: (split, English heading)}."""
    sections = [json.loads(line) for line in open(set_dir / "sections.jsonl", encoding="utf-8")]
    inputs = work / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    answers, corpus, queries, qrels, asked = {}, [], [], [], set()
    for lang in docs:
        pair = set_dir / "pairs" / f"en-{lang}"
        split_of = {line.split("\t")[0]: split for split in ("train", "test")
                    for line in open(pair / "qrels" / f"{split}.tsv", encoding="utf-8").readlines()[1:]}
        heading = {s["anchor"]: s["en"]["heading"] for s in sections if "en" in s}
        for line in open(pair / "corpus.jsonl", encoding="utf-8"):
            doc = json.loads(line)
            split = split_of.get(f"q_{doc['_id']}", "none")  # none: no usable English heading
            # The section's copies share a group: never each other's negatives in training.
            corpus.append({"_id": f"{lang}:{doc['_id']}", "title": "", "text": doc["text"], "lang": lang,
                           "group": doc["_id"]})
            answers[doc["text"]] = (split, heading.get(doc["_id"], ""))
            if split == "test":  # one query per English heading, relevant in every language that has the section
                if f"q_{doc['_id']}" not in asked:
                    asked.add(f"q_{doc['_id']}")
                    queries.append({"_id": f"q_{doc['_id']}", "text": heading[doc["_id"]], "lang": "en"})
                qrels.append(f"q_{doc['_id']}\t{lang}:{doc['_id']}\t1\n")
    write = lambda name, rows: (inputs / name).write_text(  # noqa: E731
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    write("corpus.jsonl", corpus)
    write("eval_queries.jsonl", queries)
    (inputs / "eval_qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(qrels), encoding="utf-8")
    return {"answers": answers, "corpus": inputs / "corpus.jsonl", "queries": inputs / "eval_queries.jsonl",
            "qrels": inputs / "eval_qrels.tsv", "counts": {"passages": len(corpus), "test_queries": len(queries)}}


def scripted_llm(answers: dict[str, tuple[str, str]], first_words: int = 6):
    """Good for the train split (the heading), poor for the rest (the first words), always in SAP's format."""
    from chat_server import Reply, completion

    def script(body, attempt):
        prompt = body["messages"][-1]["content"]
        article = prompt.rsplit("Article: ", 1)[1].rsplit("\nSummary:", 1)[0]
        split, heading = answers[article]
        summary = re.split(r"(?<=[.!?])\s", article, maxsplit=1)[0]
        query = heading if split == "train" else " ".join(article.split()[:first_words])
        return Reply(body=completion(f" {summary}\nQuery (English): {query}", prompt_tokens=len(prompt) // 4,
                                     completion_tokens=(len(summary) + len(query)) // 4))

    return script


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default=os.path.expanduser("~/.cache/polyret/debian_reference_set"))
    ap.add_argument("--work", default="/tmp/adapt_real_text")
    ap.add_argument("--docs", default="de,fr,ja", help="document languages (the en-X pairs)")
    ap.add_argument("--round1_steps", default="100")
    ap.add_argument("--round2_steps", default="50")
    ap.add_argument("--batch_size", default="16")
    ap.add_argument("--passage_max_length", default="256")
    ap.add_argument("--learning_rate", default="3e-5")
    args = ap.parse_args()
    work = Path(args.work)
    inputs = write_inputs(Path(args.set), work, args.docs.split(","))
    print(f"corpus: {inputs['counts']['passages']} sections of {args.docs}; "
          f"{inputs['counts']['test_queries']} real held-out English queries", flush=True)

    from chat_server import ChatServer
    from polyret.jobs import adapt

    start = time.time()
    with ChatServer(scripted_llm(inputs["answers"])) as server:
        rc = adapt.main([
            "--corpus", str(inputs["corpus"]), "--languages", "en", "--llm_base_url", server.base_url,
            "--llm_model", "scripted-heading-or-first-words", "--output_dir", str(work / "adapt"),
            "--eval_queries", str(inputs["queries"]), "--eval_qrels", str(inputs["qrels"]),
            "--max_passages", "100000", "--round1_steps", args.round1_steps, "--round2_steps", args.round2_steps,
            "--batch_size", args.batch_size, "--passage_max_length", args.passage_max_length,
            "--learning_rate", args.learning_rate, "--num_negatives", "1"])
    seconds = time.time() - start
    print(f"adapt exit status {rc}; {seconds / 60:.1f} min")
    (work / "timing.json").write_text(json.dumps({"seconds": seconds, "rc": rc}))


if __name__ == "__main__":
    main()
