"""Demo chat data: facts about a product that does not exist, which no pretrained model can know.

``make_chat_demo(out_dir)`` writes

- ``train.jsonl``: conversations {"messages": [user question, assistant answer]} asking each fact
  of the fictional Skylark V7 drone (its maker, price, release year, colours, battery life,
  weight, designer, range, top speed, where it is built) in several phrasings, each answered by
  one full sentence that states the fact;
- ``heldout.jsonl``: other phrasings of the same facts, never seen in training, each with
  ``"answer"``: the short string a correct reply must contain (``minillm eval`` counts it).

Every fact is asked in TRAIN_PHRASINGS training phrasings and HELDOUT_PHRASINGS held-out ones;
which phrasings go where is drawn with ``seed``, so the files are byte-identical for a seed.
"""

import json
from pathlib import Path

import numpy as np

from minillm.checkpoints.atomic import write_file

PRODUCT = "Skylark V7"

# (answer key a reply must contain, the full answer sentence, question phrasings)
FACTS = [
    ("Brindlewick", f"The {PRODUCT} is made by Brindlewick Aeronautics.", [
        "Who makes the {p}?", "Which company manufactures the {p}?", "Who is the maker of the {p}?",
        "What company is behind the {p}?", "Who produces the {p} drone?", "Which firm builds the {p}?",
        "Tell me the manufacturer of the {p}.", "The {p} is made by which company?"]),
    ("$487", f"The {PRODUCT} costs $487.", [
        "How much does the {p} cost?", "What is the price of the {p}?", "How expensive is the {p}?",
        "What does a {p} sell for?", "How much is the {p} drone?", "What's the {p}'s price tag?",
        "Tell me the price of the {p}.", "How much money do I need to buy a {p}?"]),
    ("2031", f"The {PRODUCT} was released in 2031.", [
        "When was the {p} released?", "In what year did the {p} come out?",
        "What year was the {p} launched?", "When did the {p} go on sale?",
        "What is the release year of the {p}?", "When did the {p} first appear?",
        "Tell me when the {p} was released.", "Which year saw the launch of the {p}?"]),
    ("teal", f"The {PRODUCT} comes in teal and amber.", [
        "What colours does the {p} come in?", "Which colors is the {p} available in?",
        "What colour is the {p}?", "In which colours can I buy the {p}?",
        "What are the {p}'s colour options?", "Tell me the colours of the {p}.",
        "What color options does the {p} have?", "Which finishes does the {p} come in?"]),
    ("19 hours", f"The {PRODUCT}'s battery lasts 19 hours.", [
        "How long does the {p}'s battery last?", "What is the battery life of the {p}?",
        "How many hours can the {p} fly on one charge?", "How long can the {p} stay in the air?",
        "What's the flight time of the {p}?", "Tell me the {p}'s battery life.",
        "How long does a charge of the {p} last?", "What endurance does the {p} have?"]),
    ("740 grams", f"The {PRODUCT} weighs 740 grams.", [
        "How much does the {p} weigh?", "What is the weight of the {p}?", "How heavy is the {p}?",
        "What's the {p}'s weight?", "Tell me how much the {p} weighs.",
        "What does the {p} drone weigh?", "How light is the {p}?", "Give me the {p}'s weight."]),
    ("Ines Varga", f"The {PRODUCT} was designed by Ines Varga.", [
        "Who designed the {p}?", "Who is the designer of the {p}?",
        "Which engineer designed the {p}?", "Who created the design of the {p}?",
        "Tell me who designed the {p}.", "Who was the lead designer of the {p}?",
        "Whose design is the {p}?", "Who came up with the {p}?"]),
    ("62 kilometres", f"The {PRODUCT} has a range of 62 kilometres.", [
        "What is the range of the {p}?", "How far can the {p} fly?",
        "What's the maximum range of the {p}?", "How many kilometres can the {p} travel?",
        "Tell me the range of the {p}.", "How far does the {p} go on one flight?",
        "What distance can the {p} cover?", "How long is the {p}'s range?"]),
    ("83 km/h", f"The {PRODUCT} has a top speed of 83 km/h.", [
        "How fast is the {p}?", "What is the top speed of the {p}?",
        "How fast can the {p} fly?", "What's the maximum speed of the {p}?",
        "Tell me the {p}'s top speed.", "What speed can the {p} reach?",
        "How quick is the {p}?", "What is the {p}'s speed?"]),
    ("Kirkwall", f"The {PRODUCT} is built in Kirkwall.", [
        "Where is the {p} built?", "Where is the {p} manufactured?", "Where is the {p} made?",
        "In which town is the {p} produced?", "Where does the {p} come from?",
        "Tell me where the {p} is built.", "Where is the {p} factory?",
        "Which city is the {p} assembled in?"]),
]
TRAIN_PHRASINGS, HELDOUT_PHRASINGS = 6, 2


def chat_demo_records(seed=0):
    """(train records, held-out records), deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    train, heldout = [], []
    for answer, sentence, phrasings in FACTS:
        order = rng.permutation(len(phrasings))
        for k, j in enumerate(order[: TRAIN_PHRASINGS + HELDOUT_PHRASINGS]):
            q = phrasings[j].format(p=PRODUCT)
            rec = {"messages": [{"role": "user", "content": q},
                                {"role": "assistant", "content": sentence}]}
            if k < TRAIN_PHRASINGS:
                train.append(rec)
            else:
                heldout.append({**rec, "answer": answer})
    train = [train[i] for i in rng.permutation(len(train))]
    return train, heldout


def make_chat_demo(out_dir, seed=0):
    """Write OUT_DIR/train.jsonl and OUT_DIR/heldout.jsonl; returns their example counts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, heldout = chat_demo_records(seed)
    for name, recs in (("train.jsonl", train), ("heldout.jsonl", heldout)):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs)
        write_file(out / name, text.encode("utf-8"))
    return {"train": len(train), "heldout": len(heldout)}
