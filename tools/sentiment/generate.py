"""Generate the quickstart's sentiment dataset: short reviews composed from hand-written fragments.

Run ``python -m tools.sentiment.generate`` to (re)write ``flows/data/sentiment/{train,test}.jsonl``
and its dataset card. The output is a pure function of `SEED` and the lexicon, so the shipped files
can be checked against a fresh run.

Each review picks a label, a domain (film, restaurant, hotel, app, electronics, home) and a
template, then fills the template from the lexicon. Templates are chosen so that surface words
mislead often enough that a model has to read: contrasts whose verdict clause decides the label,
negated praise and negated criticism, comparisons, sarcasm (positive words, negative label) and
complaints that are really praise.

Train and test are built to differ: about a fifth of the fragments (chosen by a hash of their
text), one aspect per domain and one domain per template are held out of training; test draws on
them preferentially, and every test review must
contain at least one sentiment-bearing fragment (or template/domain pairing) that no training
review contains. Test therefore measures generalisation to new wording, not recall.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from tools.sentiment import lexicon as lex

SEED = 20240611
N_TRAIN = 1200
N_TEST = 300
HOLDOUT_FRACTION = 0.2
MAX_NOVEL_USES = 4  # test rows that may share one held-out fragment
OUT_DIR = Path(__file__).resolve().parents[2] / "flows" / "data" / "sentiment"
LABELS = {"pos": "positive", "neg": "negative"}
OPPOSITE = {"pos": "neg", "neg": "pos"}

# Template weights: plain praise and criticism for the bulk, forms that need reading for about 40%.
TEMPLATES = {
    "simple": 0.14,
    "list": 0.1,
    "whole": 0.1,
    "short": 0.04,
    "comparison": 0.1,
    "expectation": 0.1,
    "negation": 0.12,
    "irony": 0.08,
    "contrast": 0.13,
    "mixed_verdict": 0.09,
}

# The inflections the lexicon's placeholders need, per (tense, plural).
_SLOTS = ("be", "benot", "could", "couldnt", "left", "felt", "came", "didnt")
_FORMS = {
    ("past", False): "was|wasn't|could have been|couldn't have been|left|felt|came|didn't",
    ("past", True): "were|weren't|could have been|couldn't have been|left|felt|came|didn't",
    ("present", False): "is|isn't|could be|couldn't be|leaves|feels|comes|doesn't",
    ("present", True): "are|aren't|could be|couldn't be|leave|feel|come|don't",
}
_VERBS = {key: dict(zip(_SLOTS, forms.split("|"))) for key, forms in _FORMS.items()}


def _frac(key: str) -> float:
    """A stable number in [0, 1) for `key` (Python's hash() is salted per process)."""
    return int(hashlib.md5(key.encode()).hexdigest()[:8], 16) / 2**32


def _held_out(item: str) -> bool:
    return _frac("frag:" + item) < HOLDOUT_FRACTION


HELD_ASPECTS = {d.name: min(d.aspects, key=lambda a: _frac(d.name + a.name)).name for d in lex.DOMAINS}
HELD_COMBOS = {(t, min(lex.DOMAINS, key=lambda d: _frac(t + d.name)).name) for t in TEMPLATES}


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


class Composer:
    """Builds one review at a time, remembering which sentiment-bearing fragments it used."""

    def __init__(self, rng: random.Random, split: str) -> None:
        self.rng = rng
        self.split = split
        self.used: set[str] = set()

    def pick(self, items: Sequence[str], polar: bool = True) -> str:
        """Choose an item; training never sees held-out items, test leans towards them."""
        kept = [x for x in items if not _held_out(x)] or list(items)
        held = [x for x in items if x not in kept]
        if self.split == "train":
            pool = kept
        else:
            pool = held if held and self.rng.random() < 0.25 else list(items)
        item = self.rng.choice(pool)
        if polar:
            self.used.add(item)
        return item

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def aspect(self, dom: lex.Domain, exclude: Sequence[str] = ()) -> lex.Aspect:
        options = [a for a in dom.aspects if a.name not in exclude]
        if self.split == "train":
            options = [a for a in options if a.name != HELD_ASPECTS[dom.name]]
        asp = self.rng.choice(options)
        self.used.add(f"aspect:{dom.name}:{asp.name}")
        return asp

    def fill(self, text: str, dom: lex.Domain, plural: bool = False) -> str:
        slots = dict(_VERBS[(dom.tense, plural)])
        if "{subj}" in text:
            slots["subj"] = self.pick(dom.subjects, polar=False)
        if "{ref}" in text:
            slots["ref"] = self.pick(dom.refs, polar=False)
        if "{again}" in text:
            slots["again"] = self.pick(dom.again, polar=False)
        return text.format(**slots)

    def clause(
        self, dom: lex.Domain, pol: str, asp: lex.Aspect | None = None, mode: str | None = None
    ) -> str:
        """An aspect clause of polarity `pol`: specific wording, a graded adjective, or negated opposite."""
        asp = asp or self.aspect(dom)
        noun = self.pick(asp.nouns, polar=False)
        mode = mode or self.rng.choices(["specific", "adj", "negated"], [0.5, 0.3, 0.2])[0]
        if mode == "specific":
            pred = self.pick(asp.pos if pol == "pos" else asp.neg)
        elif mode == "adj":
            strength = self.rng.choice(["strong", "mild"])
            adj = self.pick(lex.ADJ[(pol, strength)])
            key = "neg_mild" if (pol, strength) == ("neg", "mild") else strength
            # "absolutely a joke", "very pretty good": only a single adjective takes an intensifier.
            intens = "" if " " in adj else self.pick(lex.INTENSIFIERS[key], polar=False)
            pred = "{be} " + intens + adj
        else:
            pred = self.pick(lex.NEGATED_PRED[pol])
        return self.fill(f"{noun} {pred}", dom, asp.plural)

    def whole(self, dom: lex.Domain, pol: str) -> str:
        own = dom.whole_pos if pol == "pos" else dom.whole_neg
        return self.fill(self.pick(own + lex.WHOLE[pol]), dom)

    def hedge(self, text: str, p: float = 0.25) -> str:
        return self.pick(lex.HEDGES, polar=False) + text if self.chance(p) else cap(text)

    def end(self) -> str:
        return "!" if self.chance(0.1) else "."

    def frame(
        self, dom: lex.Domain, body: list[str], pol: str, opener: float = 0.2, closer: float = 0.15
    ) -> str:
        """Wrap sentences with an optional neutral opener and an optional closing verdict."""
        if self.chance(opener):
            body.insert(0, self.pick(dom.openers, polar=False))
        if self.chance(closer):
            body.append(self.pick(lex.CLOSE[pol] + (dom.close_pos if pol == "pos" else dom.close_neg)))
        return " ".join(body)

    # -- templates: each returns the text of one review whose overall verdict is `pol` --

    def simple(self, dom: lex.Domain, pol: str) -> str:
        if self.chance(0.25):
            strength = self.rng.choice(["strong", "mild"])
            first = self.fill("{subj} {be} " + self.pick(lex.ADJ[(pol, strength)]), dom)
        else:
            first = self.clause(dom, pol, mode=self.rng.choice(["specific", "adj"]))
        return self.frame(dom, [self.hedge(first) + self.end()], pol)

    def list(self, dom: lex.Domain, pol: str) -> str:
        a = self.aspect(dom)
        b = self.aspect(dom, exclude=[a.name])
        parts = [self.clause(dom, pol, a), self.clause(dom, pol, b)]
        text = cap(parts[0]) + self.rng.choice([", and ", " and ", ". Plus, ", "; "]) + parts[1] + self.end()
        if self.chance(0.4):
            text += " " + cap(self.whole(dom, pol)) + "."
        return self.frame(dom, [text], pol, closer=0.2)

    def contrast(self, dom: lex.Domain, pol: str) -> str:
        a = self.aspect(dom)
        minor = self.clause(dom, OPPOSITE[pol], a)
        major = (
            self.whole(dom, pol) if self.chance(0.4) else self.clause(dom, pol, self.aspect(dom, [a.name]))
        )
        form = self.pick(lex.CONTRAST["any"] + lex.CONTRAST[pol])
        text = cap(form.format(minor=minor, major=major, Minor=cap(minor), Major=cap(major)))
        return self.frame(dom, [text], pol, opener=0.15, closer=0.1)

    def negation(self, dom: lex.Domain, pol: str) -> str:
        if self.chance(0.5):
            text = self.hedge(self.clause(dom, pol, mode="negated"))
        else:
            text = self.hedge(self.fill(self.pick(lex.NEGATION_WHOLE[pol]), dom))
        return self.frame(dom, [text + self.end()], pol, closer=0.1)

    def comparison(self, dom: lex.Domain, pol: str) -> str:
        text = self.hedge(self.fill(self.pick(lex.COMPARISON[pol]), dom), 0.2) + self.end()
        if self.chance(0.35):
            text += " " + cap(self.clause(dom, pol)) + "."
        return self.frame(dom, [text], pol, closer=0.1)

    def expectation(self, dom: lex.Domain, pol: str) -> str:
        form = self.pick(lex.EXPECTATION[pol])
        return self.frame(dom, [cap(form.format(whole=self.whole(dom, pol))) + self.end()], pol, closer=0.1)

    def irony(self, dom: lex.Domain, pol: str) -> str:
        if pol == "neg":
            if self.chance(0.5):
                body = [self.pick(dom.sarcasm)]
            else:
                body = [self.pick(lex.SARCASM_FRAME).format(event=self.pick(dom.events_neg))]
        else:
            form = self.pick(lex.BACKHANDED_POS)
            complaint = self.pick(dom.only_complaint)
            body = [cap(self.fill(form.replace("{c}", complaint).replace("{C}", cap(complaint)), dom))]
            # Without the praise next to it, "the worst thing is that it had to end" is a guess.
            body.insert(self.rng.randrange(2), cap(self.whole(dom, pol)) + ".")
        # A neutral opener on most sarcasm keeps sentence count from giving the label away.
        return self.frame(dom, body, pol, opener=0.6 if pol == "neg" else 0.1, closer=0.0)

    def mixed_verdict(self, dom: lex.Domain, pol: str) -> str:
        a = self.aspect(dom)
        b = self.aspect(dom, exclude=[a.name])
        pols = [pol, OPPOSITE[pol]]
        self.rng.shuffle(pols)
        first = f"{cap(self.clause(dom, pols[0], a))}, but {self.clause(dom, pols[1], b)}."
        verdict = self.pick(lex.OVERALL_MARKER, polar=False) + self.fill(self.pick(lex.OVERALL[pol]), dom)
        return self.frame(dom, [first, cap(verdict) + self.end()], pol, opener=0.1, closer=0.0)

    def whole_review(self, dom: lex.Domain, pol: str) -> str:
        body = [self.hedge(self.whole(dom, pol)) + self.end()]
        if self.chance(0.5):
            body.append(cap(self.clause(dom, pol)) + ".")
        return self.frame(dom, body, pol, opener=0.3, closer=0.2)

    def short(self, dom: lex.Domain, pol: str) -> str:
        text = self.pick(lex.SHORT[pol])
        if self.chance(0.5):
            text = cap(self.pick(dom.subjects, polar=False)) + "? " + text
        return text


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]+", "", text.lower()).strip()


def generate(
    seed: int = SEED, n_train: int = N_TRAIN, n_test: int = N_TEST
) -> dict[str, list[dict[str, str]]]:
    """Build both splits. Train first; test keeps only reviews with something train never used."""
    rng = random.Random(seed)
    names, weights = list(TEMPLATES), list(TEMPLATES.values())
    seen: set[str] = set()
    train_frags: set[str] = set()
    novel_uses = Counter[str]()
    splits: dict[str, list[dict[str, str]]] = {}
    for split, size in (("train", n_train), ("test", n_test)):
        rows: list[dict[str, str]] = []
        counts = Counter[str]()
        attempts = 0
        while len(rows) < size:
            attempts += 1
            if attempts > 200 * size:
                raise RuntimeError(f"could not generate {size} distinct {split} reviews; enlarge the lexicon")
            pol = "pos" if counts["pos"] <= counts["neg"] else "neg"
            dom = rng.choice(lex.DOMAINS)
            template = rng.choices(names, weights)[0]
            held_combo = (template, dom.name) in HELD_COMBOS
            if split == "train" and held_combo:
                continue
            comp = Composer(rng, split)
            method = "whole_review" if template == "whole" else template
            text = getattr(comp, method)(dom, pol)
            key = _norm(text)
            if key in seen:
                continue
            novel = comp.used - train_frags
            if split == "test":
                if not (held_combo or novel):
                    continue
                # Spread the held-out wording: no single unseen fragment may dominate the test score.
                if any(novel_uses[f] >= MAX_NOVEL_USES for f in novel):
                    continue
                novel_uses.update(novel)
            else:
                train_frags |= comp.used
            seen.add(key)
            counts[pol] += 1
            rows.append({"text": text, "label": LABELS[pol], "template": template, "domain": dom.name})
        rng.shuffle(rows)
        splits[split] = rows
    return splits


def to_jsonl(rows: list[dict[str, str]]) -> str:
    """The shipped form: only `text` and `label` (template and domain are for the dataset card)."""
    return "".join(
        json.dumps({"text": r["text"], "label": r["label"]}, ensure_ascii=False) + "\n" for r in rows
    )


def dataset_card(splits: dict[str, list[dict[str, str]]]) -> str:
    """The README shipped next to the data: provenance, sizes, balance, composition, licence."""
    lines = [
        "# Sentiment reviews (quickstart dataset)",
        "",
        "Short English reviews of films, restaurants, hotels, apps, electronics and household products,",
        "each labelled `positive` or `negative` by its overall verdict. Fields: `text` (string) and",
        '`label` (`"positive"` or `"negative"`), one JSON object per line.',
        "",
        "## How it was made",
        f"Generated by `python -m tools.sentiment.generate` (seed {SEED}) from fragments hand-written for",
        "this project in `tools/sentiment/lexicon.py`; it contains no third-party text. Templates mix",
        'plain praise and criticism with contrasts ("the decor was awful, but luckily it was the best meal',
        'we\'ve had in months"), negation ("wasn\'t bad at all", "I wouldn\'t call it great"), comparisons,',
        "hedges, light sarcasm and complaints that are really praise. About a fifth of the fragments, one",
        "aspect per domain and one domain per template are kept out of training, and every",
        "test review contains wording (or a template/domain pairing) that no training review contains, so",
        "test accuracy measures generalisation rather than recall. Duplicates (ignoring case and",
        "punctuation) are removed; labels are balanced exactly.",
        "",
        "## Sizes",
        "| split | rows | positive | negative | median words | max words |",
        "|---|---|---|---|---|---|",
    ]
    for split, rows in splits.items():
        c = Counter(r["label"] for r in rows)
        words = sorted(len(r["text"].split()) for r in rows)
        lines.append(
            f"| {split} | {len(rows)} | {c['positive']} | {c['negative']} | {words[len(words) // 2]} | {words[-1]} |"
        )
    lines += ["", "## Composition (rows per template)", "| template | " + " | ".join(splits) + " |"]
    lines.append("|---|" + "---|" * len(splits))
    for template in TEMPLATES:
        counts = [sum(r["template"] == template for r in rows) for rows in splits.values()]
        lines.append(f"| {template} | " + " | ".join(map(str, counts)) + " |")
    domains = Counter(r["domain"] for rows in splits.values() for r in rows)
    lines += [
        "",
        "Domains (both splits): " + ", ".join(f"{d.name} {domains[d.name]}" for d in lex.DOMAINS) + ".",
    ]
    lines += ["", "## Licence", "Same as the project (Apache-2.0).", ""]
    return "\n".join(lines)


def _atomic_write(path: Path, text: str) -> None:
    """Write via a temp file in the same directory and rename, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write(out_dir: Path = OUT_DIR, seed: int = SEED) -> dict[str, list[dict[str, str]]]:
    """Generate and write train.jsonl, test.jsonl and README.md under `out_dir`."""
    splits = generate(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        _atomic_write(out_dir / f"{split}.jsonl", to_jsonl(rows))
    _atomic_write(out_dir / "README.md", dataset_card(splits))
    return splits


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the quickstart sentiment dataset.")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR, help=f"default: {OUT_DIR}")
    args = parser.parse_args(argv)
    splits = write(args.out_dir)
    for split, rows in splits.items():
        c = Counter(r["label"] for r in rows)
        print(f"{split}: {len(rows)} rows ({c['positive']} positive) -> {args.out_dir / (split + '.jsonl')}")


if __name__ == "__main__":
    main()
