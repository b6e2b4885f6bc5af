"""Language codes the data readers accept (ISO 639-1, plus the few 639-3 codes XTREME-UP uses)."""

from __future__ import annotations

import os

from polyret.formats import DataError

ISO_639_1 = set("""
aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee
el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is
it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms
mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk
sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi
yo za zh zu
""".split())
# Codes SWIM-IR / XTREME-UP / MIRACL / NeuCLIR use that are not two-letter ISO 639-1.
EXTRA = {"fil", "yue", "zh-cn", "zh-tw", "zho", "fas", "rus", "bho", "brx", "gom", "mai", "mni", "sat", "doi",
         "awa", "hne", "mag", "mwr", "raj", "ceb", "haw", "hmn", "ilo", "kri", "lus", "nso", "pcm", "sah"}
KNOWN_LANGUAGES = ISO_639_1 | EXTRA


def check_language(code: str, path: str | os.PathLike, line: int | None, field: str) -> str:
    if code.lower() not in KNOWN_LANGUAGES:
        raise DataError(path, line, f"field {field!r}: unknown language code {code!r}")
    return code
