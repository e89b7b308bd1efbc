#!/usr/bin/env python3
"""Write the offline test fixtures of the task suite: tests/data/tasks/<HF dataset id>/<config>/<split>.jsonl.

Each file has a few rows in exactly the schema of the real dataset, so that the task loaders read
them as they would read a local copy of the real benchmark (``LAPE_EVAL_DATA_DIR=tests/data/tasks``):

* ``openlanguagedata/flores_plus/<flores+ code>/devtest.jsonl`` (21 languages): FLORES+ fields;
  the text is three short parallel UDHR paragraphs (from lape_eval/data/udhr.jsonl), ids 0-2.
* ``google/xquad/xquad.<lang>/validation.jsonl`` (12 languages): two hand-written questions on one
  hand-written context per language, answer spans checked against the context.
* ``facebook/belebele/<flores code>/test.jsonl`` (21 languages): Belebele fields, synthetic content
  (a UDHR passage, forcing questions as questions, UDHR snippets as options); gold answers 1-3.
* ``facebook/xnli/<lang>/{test,validation}.jsonl`` (15 languages): one hand-written premise with an
  entailed, a neutral and a contradicting hypothesis (labels 0, 1, 2).

Run from the repository root: ``python scripts/make_task_fixtures.py``. Deterministic; commit the output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "tests" / "data" / "tasks"

from lape_eval.languages import PAPER_LANGUAGES, get_language  # noqa: E402
from lape_eval.evaluation.data import flores_plus_config, forcing_questions  # noqa: E402
from lape_eval.udhr import udhr_aligned  # noqa: E402

XQUAD = {  # lang: (context, [(question, answer), (question, answer)])
    "en": ("The Danube is the second-longest river in Europe. It flows through ten countries and ends in the Black Sea.",
           [("Where does the Danube end?", "the Black Sea"), ("How many countries does the Danube flow through?", "ten")]),
    "de": ("Die Donau ist der zweitlängste Fluss Europas. Sie fließt durch zehn Länder und mündet ins Schwarze Meer.",
           [("Wo mündet die Donau?", "Schwarze Meer"), ("Durch wie viele Länder fließt die Donau?", "zehn")]),
    "es": ("El Danubio es el segundo río más largo de Europa. Atraviesa diez países y desemboca en el mar Negro.",
           [("¿Dónde desemboca el Danubio?", "el mar Negro"), ("¿Cuántos países atraviesa el Danubio?", "diez")]),
    "ar": ("نهر الدانوب هو ثاني أطول نهر في أوروبا. يمر عبر عشر دول ويصب في البحر الأسود.",
           [("أين يصب نهر الدانوب؟", "البحر الأسود"), ("كم عدد الدول التي يمر عبرها نهر الدانوب؟", "عشر دول")]),
    "zh": ("多瑙河是欧洲第二长的河流。它流经十个国家，最后注入黑海。",
           [("多瑙河最后注入哪里？", "黑海"), ("多瑙河流经多少个国家？", "十个国家")]),
    "hi": ("डेन्यूब यूरोप की दूसरी सबसे लंबी नदी है। यह दस देशों से होकर बहती है और काला सागर में गिरती है।",
           [("डेन्यूब नदी कहाँ गिरती है?", "काला सागर"), ("डेन्यूब कितने देशों से होकर बहती है?", "दस देशों")]),
    "vi": ("Sông Danube là con sông dài thứ hai ở châu Âu. Nó chảy qua mười quốc gia và đổ ra Biển Đen.",
           [("Sông Danube đổ ra đâu?", "Biển Đen"), ("Sông Danube chảy qua bao nhiêu quốc gia?", "mười quốc gia")]),
    "tr": ("Tuna, Avrupa'nın en uzun ikinci nehridir. On ülkeden geçer ve Karadeniz'e dökülür.",
           [("Tuna nereye dökülür?", "Karadeniz"), ("Tuna kaç ülkeden geçer?", "On ülkeden")]),
    "th": ("แม่น้ำดานูบเป็นแม่น้ำที่ยาวเป็นอันดับสองของยุโรป ไหลผ่านสิบประเทศและไหลลงสู่ทะเลดำ",
           [("แม่น้ำดานูบไหลลงสู่ที่ใด", "ทะเลดำ"), ("แม่น้ำดานูบไหลผ่านกี่ประเทศ", "สิบประเทศ")]),
    "ru": ("Дунай — вторая по длине река Европы. Он протекает через десять стран и впадает в Чёрное море.",
           [("Куда впадает Дунай?", "Чёрное море"), ("Через сколько стран протекает Дунай?", "десять стран")]),
    "ro": ("Dunărea este al doilea cel mai lung fluviu din Europa. Trece prin zece țări și se varsă în Marea Neagră.",
           [("Unde se varsă Dunărea?", "Marea Neagră"), ("Prin câte țări trece Dunărea?", "zece țări")]),
    "el": ("Ο Δούναβης είναι ο δεύτερος μεγαλύτερος ποταμός της Ευρώπης. Διασχίζει δέκα χώρες και εκβάλλει στη Μαύρη Θάλασσα.",
           [("Πού εκβάλλει ο Δούναβης;", "Μαύρη Θάλασσα"), ("Πόσες χώρες διασχίζει ο Δούναβης;", "δέκα χώρες")]),
}

XNLI = {  # lang: (premise, entailed, neutral, contradicting)
    "en": ("The cat is sleeping on the sofa.", "An animal is resting.", "The cat is black.", "The cat is running in the garden."),
    "de": ("Die Katze schläft auf dem Sofa.", "Ein Tier ruht sich aus.", "Die Katze ist schwarz.", "Die Katze rennt im Garten."),
    "fr": ("Le chat dort sur le canapé.", "Un animal se repose.", "Le chat est noir.", "Le chat court dans le jardin."),
    "es": ("El gato duerme en el sofá.", "Un animal está descansando.", "El gato es negro.", "El gato corre en el jardín."),
    "ar": ("القطة نائمة على الأريكة.", "حيوان يستريح.", "القطة سوداء.", "القطة تركض في الحديقة."),
    "bg": ("Котката спи на дивана.", "Едно животно почива.", "Котката е черна.", "Котката тича в градината."),
    "el": ("Η γάτα κοιμάται στον καναπέ.", "Ένα ζώο ξεκουράζεται.", "Η γάτα είναι μαύρη.", "Η γάτα τρέχει στον κήπο."),
    "hi": ("बिल्ली सोफ़े पर सो रही है।", "एक जानवर आराम कर रहा है।", "बिल्ली काली है।", "बिल्ली बगीचे में दौड़ रही है।"),
    "ru": ("Кошка спит на диване.", "Животное отдыхает.", "Кошка чёрная.", "Кошка бегает в саду."),
    "sw": ("Paka analala kwenye sofa.", "Mnyama anapumzika.", "Paka ni mweusi.", "Paka anakimbia bustanini."),
    "th": ("แมวกำลังนอนอยู่บนโซฟา", "สัตว์ตัวหนึ่งกำลังพักผ่อน", "แมวตัวนั้นสีดำ", "แมวกำลังวิ่งอยู่ในสวน"),
    "tr": ("Kedi kanepede uyuyor.", "Bir hayvan dinleniyor.", "Kedi siyah.", "Kedi bahçede koşuyor."),
    "ur": ("بلی صوفے پر سو رہی ہے۔", "ایک جانور آرام کر رہا ہے۔", "بلی کالی ہے۔", "بلی باغ میں دوڑ رہی ہے۔"),
    "vi": ("Con mèo đang ngủ trên ghế sofa.", "Một con vật đang nghỉ ngơi.", "Con mèo màu đen.", "Con mèo đang chạy trong vườn."),
    "zh": ("猫在沙发上睡觉。", "一只动物在休息。", "这只猫是黑色的。", "猫在花园里跑。"),
}


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def main() -> None:
    aligned = udhr_aligned(PAPER_LANGUAGES)
    by_key = {key: texts for key, texts in aligned}
    flores_keys = [(1, 1), (3, 1), (4, 1)]  # short, parallel paragraphs (articles 1, 3, 4)
    option_keys = [(5, 1), (6, 1), (9, 1), (13, 1)]
    questions = forcing_questions()
    for lang in PAPER_LANGUAGES:
        code = flores_plus_config(lang)
        iso3, script = code.split("_")
        _write(OUT / "openlanguagedata/flores_plus" / code / "devtest.jsonl", [
            {"id": i, "iso_639_3": iso3, "iso_15924": script, "glottocode": "", "text": by_key[key][lang],
             "url": "https://example.org/udhr", "domain": "udhr", "topic": "human rights", "has_image": 0,
             "has_hyperlink": 0, "last_updated": "fixture"}
            for i, key in enumerate(flores_keys)
        ])
        flores = get_language(lang).flores
        _write(OUT / "facebook/belebele" / flores / "test.jsonl", [
            {"link": "https://example.org/udhr", "question_number": number + 1, "flores_passage": by_key[(1, 1)][lang],
             "question": questions[number][lang],
             **{f"mc_answer{k + 1}": by_key[option_keys[k]][lang][:80] for k in range(4)},
             "correct_answer_num": str(number + 1), "dialect": flores, "ds": "fixture"}
            for number in range(3)
        ])
    for lang, (context, qas) in XQUAD.items():
        rows = []
        for number, (question, answer) in enumerate(qas):
            start = context.find(answer)
            assert start >= 0, (lang, answer)
            rows.append({"id": f"fixture-{lang}-{number}", "context": context, "question": question,
                         "answers": {"text": [answer], "answer_start": [start]}})
        _write(OUT / "google/xquad" / f"xquad.{lang}" / "validation.jsonl", rows)
    for lang, (premise, *hypotheses) in XNLI.items():
        rows = [{"premise": premise, "hypothesis": h, "label": label} for label, h in enumerate(hypotheses)]
        for split in ("test", "validation"):
            _write(OUT / "facebook/xnli" / lang / f"{split}.jsonl", rows)
    print(f"wrote fixtures under {OUT}")


if __name__ == "__main__":
    main()
