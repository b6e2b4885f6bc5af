"""Summarize-then-ask prompting (SAP): build the few-shot prompt, parse the model's summary and query.

The prompt shows each exemplar as `Article / Summary / Query (<Language>)` and ends with the new
article and an open `Summary:`; the model writes an extractive summary of the passage first and then
the query in the target language. Replies are parsed leniently (markdown, quotes, echoed labels, a
model that keeps writing further exemplars) and a reply without a query is reported, never guessed.
"""

from __future__ import annotations

import re
from typing import Sequence

from polyret.io.languages import language_name
from polyret.synthesis.exemplars import Exemplar
from polyret.synthesis.llm import Messages

SYSTEM_PROMPT = ("You write search queries. For each article, first copy the one or two sentences that "
                 "matter most as an extractive summary, then write one question in the requested language "
                 "that the article answers. Follow the format of the examples exactly.")

_QUERY_LABEL = re.compile(r"^[\s>*_#-]*(?:query|question)\b[^:\n]{0,40}:[\s*_]*", re.IGNORECASE | re.MULTILINE)
_SUMMARY_LABEL = re.compile(r"^[\s>*_#-]*summary[\s*_]*:[\s*_]*", re.IGNORECASE | re.MULTILINE)
_NEXT_BLOCK = re.compile(r"^[\s>*_#-]*(?:article|summary)[\s*_]*:", re.IGNORECASE | re.MULTILINE)


class ParseFailure(ValueError):
    """A reply without the parts SAP needs; `reason` is the counter key."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _article(title: str, text: str) -> str:
    return f"Article: {title}\n{text}" if title else f"Article: {text}"


# SWIM-X's prompt ablations: summarize-then-ask (the paper's) or the query directly, no summary.
PROMPT_MODES = ("summarize_then_ask", "direct")
DIRECT_SYSTEM_PROMPT = ("You write search queries. For each article, write one question in the requested "
                        "language that the article answers. Follow the format of the examples exactly.")


def build_prompt(exemplars: Sequence[Exemplar], title: str, text: str, query_language: str,
                 prompt_mode: str = "summarize_then_ask") -> Messages:
    """Chat messages asking for a summary of (title, text) and then a query in `query_language`; with
    `prompt_mode="direct"` the exemplars show no summary and the prompt ends with the open query label."""
    label = f"Query ({language_name(query_language)}):"
    if prompt_mode == "direct":
        shots = [f"{_article(e.title, e.passage)}\n{label} {e.query}" for e in exemplars]
        user = "\n\n".join([*shots, f"{_article(title, text)}\n{label}"])
        return [{"role": "system", "content": DIRECT_SYSTEM_PROMPT}, {"role": "user", "content": user}]
    if prompt_mode != "summarize_then_ask":
        raise ValueError(f"prompt_mode must be one of {PROMPT_MODES}, got {prompt_mode!r}")
    shots = [f"{_article(e.title, e.passage)}\nSummary: {e.summary}\n{label} {e.query}" for e in exemplars]
    if not shots:  # zero-shot: the format the examples would have shown
        shots = [f"Answer in this format:\nSummary: <one or two sentences copied from the article>\n{label} <the query>"]
    user = "\n\n".join([*shots, f"{_article(title, text)}\nSummary:"])
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def _clean(text: str) -> str:
    text = text.strip().strip("*_`").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'“”«»「」":
        text = text[1:-1].strip()
    if text[:1] in "“«「" and text[-1:] in "”»」":
        text = text[1:-1].strip()
    return text


def parse_reply(reply: str) -> tuple[str, str]:
    """(summary, query) from a reply that continues the prompt's open `Summary:`."""
    reply = reply.replace("\r\n", "\n").replace("```", "")
    match = _QUERY_LABEL.search(reply)
    if match is None:
        raise ParseFailure("no_query")
    summary = _SUMMARY_LABEL.sub("", reply[:match.start()], count=1)
    query = next((line for line in reply[match.end():].split("\n") if line.strip()), "")
    if _NEXT_BLOCK.match(query):  # the label was the last thing the model wrote
        query = ""
    query, summary = _clean(query), " ".join(_clean(summary).split())
    if not query:
        raise ParseFailure("empty_query")
    return summary, query


def parse_direct_reply(reply: str) -> tuple[str, str]:
    """("", query) from a reply that continues the direct prompt's open query label (a model that repeats
    the label is fine)."""
    reply = reply.replace("\r\n", "\n").replace("```", "")
    match = _QUERY_LABEL.search(reply)
    rest = reply[match.end():] if match else reply
    query = next((line for line in rest.split("\n") if line.strip()), "")
    if _NEXT_BLOCK.match(query):
        query = ""
    query = _clean(query)
    if not query:
        raise ParseFailure("empty_query")
    return "", query
