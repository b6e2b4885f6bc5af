"""Template-based synthetic multilingual retrieval data (the retrofitting paper's template approach).

Made-up people (names built from syllables, written in each language's script) have three attributes:
birth year, home city, profession. Each (person, attribute) becomes a one-sentence document in every
language, and a question about it in every language, worded differently from the documents. A query
shares the person's name with three documents of that person (only one answers it) and its question
words with documents about other people: hard negatives by construction, so exact string match does
not solve it, while a model that learns which words ask for which attribute does.

`write_template_dataset` writes corpus, queries, qrels and training pairs in the project's formats.
It is the embedded default data for the demo and the tests.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

LANGUAGES = ("en", "de", "fr", "ru", "ja", "zh", "ar")
LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "ru": "Russian", "ja": "Japanese",
                  "zh": "Chinese", "ar": "Arabic"}
ATTRIBUTES = ("year", "city", "job")

_CONSONANTS, _VOWELS = "kstnmr", "aiueo"
_SYLLABLES = [c + v for c in _CONSONANTS for v in _VOWELS]
_CYRILLIC = dict(zip("kstnmraiueo", "кстнмраиуео"))
_ARABIC = dict(zip("kstnmraiueo", "كستنمراي وي و".replace(" ", "")))
_KATAKANA = dict(zip(_SYLLABLES, "カキクケコサシスセソタチツテトナニヌネノマミムメモラリルレロ"))
_HANZI = dict(zip(_SYLLABLES, "卡基库克科萨西苏塞索塔蒂图特托纳尼努内诺马米穆梅莫拉里鲁雷罗"))

CITIES = {
    "en": ["Paris", "Berlin", "Tokyo", "Cairo", "Moscow", "Rome", "Madrid", "Beijing"],
    "de": ["Paris", "Berlin", "Tokio", "Kairo", "Moskau", "Rom", "Madrid", "Peking"],
    "fr": ["Paris", "Berlin", "Tokyo", "Le Caire", "Moscou", "Rome", "Madrid", "Pékin"],
    "ru": ["Париж", "Берлин", "Токио", "Каир", "Москва", "Рим", "Мадрид", "Пекин"],
    "ja": ["パリ", "ベルリン", "東京", "カイロ", "モスクワ", "ローマ", "マドリード", "北京"],
    "zh": ["巴黎", "柏林", "东京", "开罗", "莫斯科", "罗马", "马德里", "北京"],
    "ar": ["باريس", "برلين", "طوكيو", "القاهرة", "موسكو", "روما", "مدريد", "بكين"],
}
JOBS = {
    "en": ["painter", "doctor", "engineer", "teacher", "musician", "farmer", "pilot", "cook"],
    "de": ["Maler", "Arzt", "Ingenieur", "Lehrer", "Musiker", "Bauer", "Pilot", "Koch"],
    "fr": ["peintre", "médecin", "ingénieur", "professeur", "musicien", "agriculteur", "pilote", "cuisinier"],
    "ru": ["художник", "врач", "инженер", "учитель", "музыкант", "фермер", "пилот", "повар"],
    "ja": ["画家", "医者", "技術者", "教師", "音楽家", "農家", "パイロット", "料理人"],
    "zh": ["画家", "医生", "工程师", "教师", "音乐家", "农民", "飞行员", "厨师"],
    "ar": ["رسام", "طبيب", "مهندس", "معلم", "موسيقي", "مزارع", "طيار", "طباخ"],
}
# (document templates, query templates) per language and attribute; {n} name, {v} value.
TEMPLATES = {
    "en": {"year": (["{n} was born in the year {v}.", "The birth of {n} took place in {v}."],
                    ["When was {n} born?", "In which year did {n} come into the world?"]),
           "city": (["{n} lives in {v}.", "{n} has made a home in {v}."],
                    ["Where does {n} live?", "Which city is home to {n}?"]),
           "job": (["{n} works as a {v}.", "By profession, {n} is a {v}."],
                   ["What is the job of {n}?", "What does {n} do for a living?"])},
    "de": {"year": (["{n} wurde im Jahr {v} geboren.", "{n} kam {v} zur Welt."],
                    ["Wann ist {n} geboren?", "Welches Geburtsjahr hat {n}?"]),
           "city": (["{n} wohnt in {v}.", "{n} lebt in der Stadt {v}."],
                    ["Wo ist {n} zu Hause?", "In welchem Ort findet man {n}?"]),
           "job": (["{n} arbeitet als {v}.", "Von Beruf ist {n} {v}."],
                   ["Was macht {n} beruflich?", "Womit verdient {n} sein Geld?"])},
    "fr": {"year": (["{n} est né en {v}.", "La naissance de {n} date de {v}."],
                    ["Quand {n} a-t-il vu le jour ?", "En quelle année {n} est-il venu au monde ?"]),
           "city": (["{n} habite à {v}.", "{n} vit dans la ville de {v}."],
                    ["Où réside {n} ?", "Quelle ville est le foyer de {n} ?"]),
           "job": (["{n} travaille comme {v}.", "De métier, {n} est {v}."],
                   ["Quelle est la profession de {n} ?", "Que fait {n} dans la vie ?"])},
    "ru": {"year": (["{n} родился в {v} году.", "{n} появился на свет в {v} году."],
                    ["Когда родился {n}?", "В каком году родился {n}?"]),
           "city": (["{n} живёт в городе {v}.", "Дом {n} находится в городе {v}."],
                    ["Где проживает {n}?", "Какой город стал домом для {n}?"]),
           "job": (["{n} работает как {v}.", "По профессии {n} — {v}."],
                   ["Кем трудится {n}?", "Чем {n} зарабатывает на жизнь?"])},
    "ja": {"year": (["{n}は{v}年に生まれた。", "{n}の誕生は{v}年である。"],
                    ["{n}はいつ生まれましたか？", "{n}は何年生まれですか？"]),
           "city": (["{n}は{v}に住んでいる。", "{n}の家は{v}にある。"],
                    ["{n}はどこに住んでいますか？", "{n}が暮らす都市はどこですか？"]),
           "job": (["{n}は{v}として働いている。", "{n}の職業は{v}だ。"],
                   ["{n}の仕事は何ですか？", "{n}は何をして生計を立てていますか？"])},
    "zh": {"year": (["{n}出生于{v}年。", "{n}在{v}年诞生。"],
                    ["{n}是什么时候出生的？", "{n}哪一年来到这个世界？"]),
           "city": (["{n}住在{v}。", "{n}的家在{v}。"],
                    ["{n}住在哪里？", "{n}生活在哪个城市？"]),
           "job": (["{n}的工作是{v}。", "{n}是一名{v}。"],
                   ["{n}做什么工作？", "{n}靠什么谋生？"])},
    "ar": {"year": (["وُلد {n} في عام {v}.", "كانت ولادة {n} سنة {v}."],
                    ["متى وُلد {n}؟", "في أي عام جاء {n} إلى الدنيا؟"]),
           "city": (["يعيش {n} في {v}.", "يقع منزل {n} في مدينة {v}."],
                    ["أين يسكن {n}؟", "ما هي المدينة التي يقيم فيها {n}؟"]),
           "job": (["يعمل {n} {v}.", "مهنة {n} هي {v}."],
                   ["ما هي وظيفة {n}؟", "كيف يكسب {n} رزقه؟"])},
}


def render_name(syllables: list[str], lang: str) -> str:
    if lang == "ru":
        return "".join(_CYRILLIC[ch] for s in syllables for ch in s).capitalize()
    if lang == "ar":
        return "".join(_ARABIC[ch] for s in syllables for ch in s)
    if lang == "ja":
        return "".join(_KATAKANA[s] for s in syllables)
    if lang == "zh":
        return "".join(_HANZI[s] for s in syllables)
    return "".join(syllables).capitalize()


def _value(attribute: str, index: int, lang: str) -> str:
    if attribute == "year":
        return str(1900 + index)
    return (CITIES if attribute == "city" else JOBS)[lang][index]


def make_entities(num_entities: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    names, entities = set(), []
    while len(entities) < num_entities:
        syllables = [rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 3, 3)))]
        if "".join(syllables) in names:
            continue
        names.add("".join(syllables))
        entities.append({"id": f"e{len(entities):05d}", "syllables": syllables,
                         "values": {"year": rng.randrange(100), "city": rng.randrange(8), "job": rng.randrange(8)}})
    return entities


def document(entity: dict, attribute: str, lang: str) -> str:
    docs, _ = TEMPLATES[lang][attribute]
    variant = int(entity["id"][1:]) % len(docs)
    return docs[variant].format(n=render_name(entity["syllables"], lang),
                                v=_value(attribute, entity["values"][attribute], lang))


def query(entity: dict, attribute: str, lang: str, variant: int) -> str:
    _, queries = TEMPLATES[lang][attribute]
    return queries[variant % len(queries)].format(n=render_name(entity["syllables"], lang))


def doc_id(entity: dict, attribute: str, lang: str) -> str:
    return f"{entity['id']}-{attribute}-{lang}"


def _write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_template_dataset(out_dir: str | Path, num_entities: int = 200, languages: tuple[str, ...] = LANGUAGES,
                           test_fraction: float = 0.25, seed: int = 0) -> dict[str, Path]:
    """Write the dataset under `out_dir`; returns the main paths. Layout:

      corpus/{lang}.jsonl                 {"_id", "title", "text"}   every person x attribute
      queries/{split}/{lang}.jsonl        {"_id", "text", "lang"}    split: train | test (held-out people)
      qrels/{split}/{lang}.mono.txt       TREC qrels against corpus/{lang}
      qrels/{split}/{lang}.xling.txt      TREC qrels against corpus/en (cross-lingual)
      train/swim_ir_{monolingual|cross_lingual}_{lang}.jsonl   SWIM-IR pairs (train people)
      train/hard_negatives_{lang}.jsonl   {"query", "positive", "negatives"}
      text.txt                            all text, for training a SentencePiece model
    """
    out = Path(out_dir)
    entities = make_entities(num_entities, seed)
    num_test = max(1, int(round(num_entities * test_fraction)))
    splits = {"train": entities[:-num_test], "test": entities[-num_test:]}
    rng = random.Random(seed + 1)
    all_text = []
    for lang in languages:
        rows = [{"_id": doc_id(e, a, lang), "title": "", "text": document(e, a, lang)}
                for e in entities for a in ATTRIBUTES]
        all_text += [r["text"] for r in rows]
        _write_jsonl(out / "corpus" / f"{lang}.jsonl", rows)
    for split, people in splits.items():
        for lang in languages:
            queries, mono, xling = [], [], []
            for e in people:
                for a in ATTRIBUTES:
                    qid = f"q-{e['id']}-{a}-{lang}"
                    queries.append({"_id": qid, "text": query(e, a, lang, rng.randrange(2)), "lang": lang})
                    mono.append(f"{qid} 0 {doc_id(e, a, lang)} 1")
                    xling.append(f"{qid} 0 {doc_id(e, a, 'en')} 1")
            all_text += [q["text"] for q in queries]
            _write_jsonl(out / "queries" / split / f"{lang}.jsonl", queries)
            (out / "qrels" / split).mkdir(parents=True, exist_ok=True)
            (out / "qrels" / split / f"{lang}.mono.txt").write_text("\n".join(mono) + "\n")
            (out / "qrels" / split / f"{lang}.xling.txt").write_text("\n".join(xling) + "\n")
    train = splits["train"]
    for lang in languages:
        for section, passage_lang in (("monolingual", lang), ("cross_lingual", "en")):
            rows = [{"_id": f"{e['id']}-{a}-{lang}-{section}", "lang": LANGUAGE_NAMES[lang], "code": lang,
                     "query": query(e, a, lang, rng.randrange(2)), "title": "", "text": document(e, a, passage_lang)}
                    for e in train for a in ATTRIBUTES]
            _write_jsonl(out / "train" / f"swim_ir_{section}_{lang}.jsonl", rows)
        rows = []
        for e in train:
            for a in ATTRIBUTES:
                same_person = [document(e, b, lang) for b in ATTRIBUTES if b != a]
                other = rng.choice([o for o in train if o["values"][a] != e["values"][a]])
                rows.append({"query": query(e, a, lang, rng.randrange(2)), "positive": document(e, a, lang),
                             "negatives": same_person + [document(other, a, lang)]})
        _write_jsonl(out / "train" / f"hard_negatives_{lang}.jsonl", rows)
    (out / "text.txt").write_text("\n".join(all_text) + "\n", encoding="utf-8")
    return {"root": out, "corpus": out / "corpus", "queries": out / "queries", "qrels": out / "qrels",
            "train": out / "train", "text": out / "text.txt"}
