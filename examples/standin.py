"""Offline stand-ins for the Hub models and datasets of HF PEFT's task guides (used by the guide examples).

The guides fine-tune Hub models (bloomz-560m, mt0-large) on Hub datasets (RAFT twitter_complaints,
financial_phrasebank); none of that downloads here. A stand-in keeps the guide's code path whole: the
rows have the guide's columns and labels, and the base model is a tiny model of the same family, saved
with a word-level tokenizer over the stand-in's own words (a small vocabulary, so that the label words
are a real choice for a tiny model rather than 2 of 30,000 tokens).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import torch

SPECIALS = ["[PAD]", "[UNK]", "<s>", "</s>"]

# Tweets to a company: a handle, a complaint or a friendly remark / question, a close.
_HANDLES = ["@NorthRail", "@QuickShip", "@BrightMobile", "@CityPower", "@SkyAir", "@HomeBank"]
_COMPLAINTS = [
    "my parcel has been stuck in the depot for nine days and nobody answers",
    "third time this month the train was cancelled without a word",
    "charged twice for the same bill , still waiting on a refund",
    "your app logs me out every time I try to pay",
    "the engineer never showed up and I took a day off for it",
    "lost my luggage and the desk just shrugged",
    "no signal at home for a week , what am I paying for",
    "been on hold for an hour , is anyone actually working",
]
_FRIENDLY = [
    "thanks for sorting out my booking so quickly",
    "the new timetable works really well for my commute",
    "great chat with your support team today",
    "parcel arrived a day early , nice one",
    "is the lounge at gate 4 open on sundays ?",
    "loving the new card design",
    "do you ship to the islands as well ?",
    "the crew on this morning's flight were lovely",
]
_CLOSES = ["", " #fail", " !!", " :)", " please help", " cheers", " #customerservice", " ..."]


def tweets(n: int, seed: int) -> list[dict[str, str]]:
    """`n` tweets with the guide's columns after its label step: "Tweet text", "text_label"."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        complaint = i % 2 == 0
        body = rng.choice(_COMPLAINTS if complaint else _FRIENDLY)
        rows.append(
            {
                "Tweet text": f"{rng.choice(_HANDLES)} {body}{rng.choice(_CLOSES)}",
                "text_label": "complaint" if complaint else "no complaint",
            }
        )
    return rows


# Financial news: a company, what happened (the sentiment), a figure.
_COMPANIES = [
    "Nordica Oyj",
    "Baltic Steel",
    "Aurora Foods",
    "Helix Telecom",
    "Kestrel Paper",
    "Vantaa Logistics",
]
_NEWS = {
    "positive": [
        "operating profit rose to EUR {a} mn from EUR {b} mn",
        "net sales increased by {p} % year on year",
        "won a contract worth EUR {a} mn",
        "raised its full-year outlook after a strong quarter",
    ],
    "negative": [
        "operating loss widened to EUR {a} mn",
        "net sales decreased by {p} % in the third quarter",
        "will cut {p} jobs after orders fell",
        "lowered its guidance for the year",
    ],
    "neutral": [
        "will publish its interim report on {d} April",
        "the annual general meeting is held in Helsinki on {d} May",
        "appointed a new chief financial officer",
        "shares are listed on the Nasdaq Helsinki exchange",
    ],
}


def financial_news(n: int, seed: int) -> list[dict[str, str]]:
    """`n` news sentences with the guide's columns after its label step: "sentence", "text_label"."""
    rng = random.Random(seed)
    labels = list(_NEWS)
    rows = []
    for i in range(n):
        label = labels[i % 3]
        news = rng.choice(_NEWS[label]).format(
            a=rng.randint(2, 90), b=rng.randint(2, 90), p=rng.randint(2, 30), d=rng.randint(1, 28)
        )
        rows.append({"sentence": f"{rng.choice(_COMPANIES)} {news} .", "text_label": label})
    return rows


def word_tokenizer(texts: list[str], eos_after: bool = False) -> Any:
    """A word-level fast tokenizer over the words of `texts` (and digits), with [PAD] [UNK] <s> </s>;
    `eos_after` appends </s> to every encoded text, as T5's tokenizers do."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words: dict[str, int] = {tok: i for i, tok in enumerate(SPECIALS)}
    split = pre_tokenizers.Whitespace()
    for text in [*texts, " ".join("0123456789")]:
        for word, _ in split.pre_tokenize_str(text):
            words.setdefault(word, len(words))
    backend = Tokenizer(models.WordLevel(words, unk_token="[UNK]"))
    backend.pre_tokenizer = split
    if eos_after:
        eos = ("</s>", words["</s>"])
        backend.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[eos]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", bos_token="<s>", eos_token="</s>"
    )


def save_base(
    directory: str,
    texts: list[str],
    build: Callable[[Any], torch.nn.Module],
    seed: int,
    eos_after: bool = False,
) -> str:
    """Build a tiny model with `build(tokenizer)` (seeded) and save it with its tokenizer; returns the path."""
    tokenizer = word_tokenizer(texts, eos_after)
    torch.manual_seed(seed)
    build(tokenizer).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
