"""Real text without a data hub: fetch Debian documentation packages with `apt-get download`, unpack them
with `dpkg -x`, strip HTML, split into sentences and write one deduplicated sentence a line.

  python benchmarks/real_text_corpus.py [--cache_dir ~/.cache/polyret/debian] [--packages a,b,c]

Output: CACHE/sentences.txt (unique sentences of 5-60 words, in package order) and CACHE/sources.json
(sentences per package). Manual pages are never read (only HTML / plain-text documentation under
usr/share/doc and usr/share/help). Reruns reuse the downloaded .deb files.
"""

from __future__ import annotations

import argparse
import gzip
import html
import json
import os
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from polyret.datasets.debian_docs import fetch_package

# English documentation first (the model is English MiniLM); translations only add scale.
DEFAULT_PACKAGES = [
    "openjdk-17-doc", "python3.11-doc", "libreoffice-help-en-us", "postgresql-doc-15", "gimp-help-en",
    "debian-handbook", "debian-reference-en", "developers-reference", "debian-policy", "harden-doc",
    "debian-faq", "git-doc", "gnucash-docs", "octave-doc", "lilypond-doc-html", "python-django-doc",
    "python-sqlalchemy-doc", "nodejs-doc", "apache2-doc", "kicad-doc-en", "sphinx-doc", "ruby3.1-doc",
]
SKIP_BLOCKS = {"script", "style", "pre", "code", "head"}
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


class _Text(HTMLParser):
    """Visible text of an HTML page, one block element a line, code and scripts dropped."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in SKIP_BLOCKS:
            self.skip += 1
        if tag in {"p", "li", "div", "td", "h1", "h2", "h3", "h4", "dd", "dt", "br", "tr", "section"}:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in SKIP_BLOCKS and self.skip:
            self.skip -= 1
        if tag in {"p", "li", "div", "td", "dd", "dt"}:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def html_text(raw: str) -> str:
    parser = _Text()
    try:
        parser.feed(raw)
    except Exception:  # a malformed page: keep what was parsed
        pass
    return "".join(parser.parts)


def sentences(text: str, min_words: int = 5, max_words: int = 60):
    for block in re.split(r"\n\s*\n|\n", html.unescape(text)):
        block = " ".join(block.split())
        for s in SENTENCE_END.split(block):
            words = s.split()
            letters = sum(c.isalpha() for c in s)
            if min_words <= len(words) <= max_words and letters >= 0.6 * len(s):
                yield s


def documents(root: Path):
    """Texts of the documentation files under a package root (HTML, plain text; never man pages)."""
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if "/man/" in rel or not path.is_file() or not (rel.startswith("usr/share/doc") or rel.startswith("usr/share/help")
                                                         or rel.startswith("usr/share/gimp") or rel.startswith("usr/share/libreoffice")):
            continue
        name = path.name.lower()
        opener = gzip.open if name.endswith(".gz") else open
        base = name[:-3] if name.endswith(".gz") else name
        try:
            if base.endswith((".html", ".htm", ".xhtml", ".xhp")):
                with opener(path, "rt", encoding="utf-8", errors="replace") as f:
                    yield html_text(f.read())
            elif base.endswith(".txt") or base in {"readme", "changelog"}:
                with opener(path, "rt", encoding="utf-8", errors="replace") as f:
                    yield f.read()
        except OSError:
            continue


def build(cache: Path, packages: list[str]) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / "sentences.txt"
    seen: set[str] = set()
    counts = {}
    with open(out.with_suffix(".tmp"), "w", encoding="utf-8") as f:
        for package in packages:
            try:
                root = fetch_package(package, cache)
            except (RuntimeError, subprocess.CalledProcessError) as e:  # apt-get / dpkg failed
                print(f"{package}: not fetched ({str(e)[:120]})")
                continue
            n = 0
            for text in documents(root):
                for s in sentences(text):
                    if s not in seen:
                        seen.add(s)
                        f.write(s + "\n")
                        n += 1
            counts[package] = n
            print(f"{package}: {n} new sentences (total {len(seen)})", flush=True)
    os.replace(out.with_suffix(".tmp"), out)
    (cache / "sources.json").write_text(json.dumps(counts, indent=2))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache_dir", default=os.path.expanduser("~/.cache/polyret/debian"))
    ap.add_argument("--packages", default=",".join(DEFAULT_PACKAGES))
    args = ap.parse_args()
    out = build(Path(args.cache_dir), [p for p in args.packages.split(",") if p])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
