"""A small English corpus and an LLM script whose replies depend on the passage they are asked about."""

from __future__ import annotations

import json
import re
from pathlib import Path

from chat_server import Reply, completion

TOPICS = ["river", "castle", "violin", "glacier", "comet", "library", "harbour", "orchard", "volcano",
          "bridge", "lighthouse", "desert"]
QUERIES = {
    "de": "Wie alt ist {x} und warum ist der Ort heute so bekannt?",
    "fr": "Quel âge a {x} et pourquoi ce lieu est-il si connu aujourd'hui ?",
}
LANGUAGE_NAMES = {"de": "German", "fr": "French"}


def passage_text(i: int) -> str:
    return (f"The {TOPICS[i]} named Item{i:02d} was first described in the year {1500 + 17 * i}. "
            f"Visitors come to see the {TOPICS[i]} in every season, and local guides tell its long story.")


def write_corpus(path: Path, n: int = 12) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"_id": f"p{i:02d}", "title": f"Item{i:02d}", "text": passage_text(i)}) + "\n")
    return path


def asked_about(body: dict) -> tuple[int, str]:
    """(passage number, query language) of a SAP prompt: the last article, and the label's language."""
    user = body["messages"][-1]["content"]
    number = int(re.findall(r"named Item(\d\d)", user)[-1])
    name = re.findall(r"Query \((\w+)\):", user)[-1]
    return number, {v: k for k, v in LANGUAGE_NAMES.items()}[name]


def good_query(i: int, lang: str) -> str:
    return QUERIES[lang].format(x=f"Item{i:02d}")


def good_text(i: int, lang: str) -> str:
    summary = passage_text(i).split(". ")[0] + "."
    return f" {summary}\nQuery ({LANGUAGE_NAMES[lang]}): {good_query(i, lang)}"


def scripted(body: dict, attempt: int) -> Reply:
    """What each passage gets; see the test for the expected outcome of each."""
    i, lang = asked_about(body)
    ok = Reply(body=completion(good_text(i, lang)), delay_s=0.05)
    if i == 1 and attempt == 0:
        return Reply(429, {"error": {"message": "rate limited"}}, {"retry-after-ms": "20"})
    if i == 2 and attempt < 2:
        return Reply(500, {"error": {"message": "overloaded"}})
    if i == 3:
        return Reply(body='{"choices": [ this is not JSON')
    if i == 4 and attempt == 0:
        return Reply(body=completion(good_text(i, lang)), delay_s=2.0)  # past the client's timeout
    if i == 5:
        return Reply(body=completion("I will think about a good question for this article."))
    if i == 6:
        return Reply(body=completion(f"Summary.\nQuery ({LANGUAGE_NAMES[lang]}): "
                                     "How old is this place and why is it so famous today?"))
    if i == 7:
        copied = passage_text(i)[:80]
        return Reply(body=completion(f"Summary.\nQuery ({LANGUAGE_NAMES[lang]}): {copied}?"))
    if i == 8:
        return Reply(body=completion(f"Summary: none\nQuery ({LANGUAGE_NAMES[lang]}): I'm sorry, I cannot help."))
    if i == 9:
        return Reply(body=completion(f"**Summary:** {passage_text(i).split('. ')[0]}.\n\n"
                                     f"**Query ({LANGUAGE_NAMES[lang]}):** \"{good_query(i, lang)}\""))
    if i == 10:
        return Reply(body=completion(good_text(0, lang)))  # the same query as passage 0
    return ok


# passage number -> expected drop reason (None: kept with the good query)
OUTCOME = {1: None, 2: None, 3: "llm_error", 4: None, 5: "no_query", 6: "wrong_language",
           7: "copies_passage", 8: "refusal", 9: None, 10: "duplicate_of_0", 0: None, 11: None}
