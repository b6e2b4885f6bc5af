"""Language codes the data readers accept (ISO 639-1, plus the few 639-3 codes XTREME-UP uses) and names."""

from __future__ import annotations

import os

from polyret.errors import DataError

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
         "awa", "gbm", "hne", "mag", "mwr", "raj", "ceb", "haw", "hmn", "ilo", "kri", "lus", "nso", "pcm", "sah"}
KNOWN_LANGUAGES = ISO_639_1 | EXTRA


# Non-standard codes found in published data -> the ISO code. `hn`: the SWIM-IR datacard's Hindi example;
# `iw`, `in`, `ji`, `jw`: Java/Google's legacy codes for Hebrew, Indonesian, Yiddish, Javanese.
LANGUAGE_ALIASES = {"hn": "hi", "iw": "he", "in": "id", "ji": "yi", "jw": "jv"}


def check_language(code: str, path: str | os.PathLike, line: int | None, field: str) -> str:
    """The language code, with aliases such as `hn` mapped to their ISO code; unknown codes are a
    DataError naming file:line:field."""
    if not isinstance(code, str) or not code.strip():
        raise DataError(path, line, f"field {field!r}: empty language code")
    lowered = code.strip().lower()
    if lowered in LANGUAGE_ALIASES:
        return LANGUAGE_ALIASES[lowered]
    if lowered not in KNOWN_LANGUAGES:
        raise DataError(path, line, f"field {field!r}: unknown language code {code!r}")
    return code


normalize_language = check_language


# English names, as the SWIM-IR prompt files and prompts write them.
LANGUAGE_NAMES = {
    "af": "Afrikaans", "am": "Amharic", "ar": "Arabic", "as": "Assamese", "az": "Azerbaijani",
    "be": "Belarusian", "bg": "Bulgarian", "bho": "Bhojpuri", "bn": "Bengali", "brx": "Boro", "ca": "Catalan",
    "cs": "Czech", "cy": "Welsh", "da": "Danish", "de": "German", "el": "Greek", "en": "English",
    "es": "Spanish", "et": "Estonian", "eu": "Basque", "fa": "Persian", "fi": "Finnish", "fil": "Filipino",
    "fr": "French", "ga": "Irish", "gbm": "Garhwali", "gom": "Konkani", "gu": "Gujarati", "ha": "Hausa",
    "he": "Hebrew", "hi": "Hindi", "hne": "Chhattisgarhi", "hr": "Croatian", "hu": "Hungarian",
    "hy": "Armenian", "id": "Indonesian", "ig": "Igbo", "is": "Icelandic", "it": "Italian", "ja": "Japanese",
    "jv": "Javanese", "ka": "Georgian", "kk": "Kazakh", "km": "Khmer", "kn": "Kannada", "ko": "Korean",
    "ky": "Kyrgyz", "lo": "Lao", "lt": "Lithuanian", "lv": "Latvian", "mai": "Maithili", "mk": "Macedonian",
    "ml": "Malayalam", "mn": "Mongolian", "mni": "Manipuri", "mr": "Marathi", "ms": "Malay", "my": "Burmese",
    "mwr": "Marwari", "ne": "Nepali", "nl": "Dutch", "no": "Norwegian", "or": "Odia", "pa": "Punjabi",
    "pl": "Polish", "ps": "Pashto", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sa": "Sanskrit",
    "sd": "Sindhi", "si": "Sinhala", "sk": "Slovak", "sl": "Slovenian", "so": "Somali", "sq": "Albanian",
    "sr": "Serbian", "sv": "Swedish", "sw": "Swahili", "ta": "Tamil", "te": "Telugu", "th": "Thai",
    "tl": "Tagalog", "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu", "uz": "Uzbek", "vi": "Vietnamese",
    "xh": "Xhosa", "yo": "Yoruba", "zh": "Chinese", "zu": "Zulu",
}
_CODES_BY_NAME = {name.lower(): code for code, name in LANGUAGE_NAMES.items()} | {"farsi": "fa"}


def language_name(code: str) -> str:
    """English name of a language code (the code itself when we have no name for it)."""
    return LANGUAGE_NAMES.get(code.lower(), code)


def language_code(name_or_code: str) -> str | None:
    """`German`, `German (MT)`, `german` or `de` -> `de`; None when it names no language we know."""
    text = name_or_code.split("(")[0].strip().lower()
    if text in KNOWN_LANGUAGES:
        return text
    return _CODES_BY_NAME.get(text)
