"""Hand-written fragments that `tools.sentiment.generate` composes into short reviews.

Every string here was written for this project. Fragments are grouped by domain (what is reviewed)
and by polarity; the composer in `generate.py` decides how they combine and which label the
whole review gets. Placeholders filled by the composer:

- ``{be}`` / ``{benot}``: the copula in the domain's tense and the aspect's number
  ("was"/"were"/"is"/"are", "wasn't"/"weren't"/"isn't"/"aren't"); ``{could}``, ``{couldnt}``,
  ``{left}``, ``{felt}``, ``{came}``, ``{didnt}`` likewise ("could have been"/"could be", ...).
- ``{subj}``: the thing reviewed ("the film"); ``{ref}``: something it is compared with;
  ``{again}``: the domain's "do it again" verb phrase ("go back", "watch it again").

Phrases that fit every domain are here; the domains themselves are in `domains.py`
(film, restaurant, hotel, and the `Aspect` / `Domain` types) and `products.py`.
"""

from __future__ import annotations

from tools.sentiment.domains import FILM, HOTEL, RESTAURANT, Aspect, Domain
from tools.sentiment.products import APP, ELECTRONICS, HOME

__all__ = ["DOMAINS", "Aspect", "Domain"]

# Adjectives by polarity and strength. Multi-word entries take no intensifier.
ADJ = {
    ("pos", "strong"): (
        "outstanding",
        "superb",
        "excellent",
        "fantastic",
        "brilliant",
        "wonderful",
        "terrific",
        "phenomenal",
        "top-notch",
        "first-rate",
        "spot on",
        "a revelation",
        "flawless",
        "stellar",
    ),
    ("pos", "mild"): (
        "solid",
        "decent",
        "pretty good",
        "nice",
        "pleasant",
        "enjoyable",
        "good",
        "well done",
        "better than expected",
        "a nice surprise",
        "lovely",
        "satisfying",
    ),
    ("neg", "strong"): (
        "awful",
        "terrible",
        "dreadful",
        "atrocious",
        "abysmal",
        "horrendous",
        "a joke",
        "a disaster",
        "unbearable",
        "appalling",
        "a shambles",
        "diabolical",
    ),
    ("neg", "mild"): (
        "underwhelming",
        "mediocre",
        "disappointing",
        "bland",
        "forgettable",
        "a letdown",
        "lacklustre",
        "uninspired",
        "subpar",
        "weak",
        "a bit of a mess",
        "tired",
    ),
}
INTENSIFIERS = {
    "strong": ("absolutely ", "truly ", "genuinely ", "simply ", "just ", "", "", ""),
    "mild": ("really ", "quite ", "very ", "perfectly ", "", "", ""),
    "neg_mild": ("a bit ", "rather ", "pretty ", "somewhat ", "kind of ", "really ", "", ""),
}

# Predicates whose surface form is negated but whose meaning is the opposite polarity.
NEGATED_PRED = {
    "pos": (
        "{benot} bad at all",
        "{benot} half bad",
        "{benot} disappointing in the slightest",
        "{benot} a problem for a second",
        "{benot} anywhere near as bad as people said",
        "{benot} the letdown I was bracing for",
        "{couldnt} better",
        "{left} nothing to be desired",
        "{benot} the weak spot I feared",
        "never once {felt} like a weak point",
    ),
    "neg": (
        "{benot} great",
        "{benot} anything special",
        "{benot} exactly impressive",
        "{benot} worth the hype",
        "{benot} up to much",
        "{benot} nearly as good as I'd hoped",
        "{benot} what I'd call good",
        "{could} a lot better",
        "{benot} up to scratch",
        "never really {came} together",
        "{didnt} impress me",
        "{benot} as good as advertised",
    ),
}

# Whole-review negation clauses: "not bad at all" style, meaning the opposite of their surface.
NEGATION_WHOLE = {
    "pos": (
        "I can't fault it",
        "I honestly can't find anything to complain about",
        "there's not a single thing I'd change",
        "no complaints whatsoever",
        "I was not disappointed",
        "I didn't expect much, but I certainly wasn't let down",
        "not once did I regret it",
        "I can't say a bad word about it",
        "not bad at all, not bad at all",
        "I wouldn't change a thing",
        "it's not perfect, but I'm not complaining",
        "I have no idea why it has bad reviews",
        "nobody could call it a waste of money",
        "I won't hesitate to {again}",
    ),
    "neg": (
        "I wouldn't call it great",
        "I can't really recommend it",
        "I won't {again}",
        "I can't say I enjoyed it",
        "I didn't hate it, but I won't {again}",
        "it's not that it was terrible, it just wasn't good",
        "it wasn't worth the money",
        "there was nothing I'd go out of my way for",
        "I wouldn't recommend it to anyone",
        "I don't get the hype at all",
        "nothing about it stood out",
        "I'm not in a hurry to {again}",
        "it's not something I'd pay for twice",
        "I wouldn't say it was worth it",
    ),
}

COMPARISON = {
    "pos": (
        "it's far better than {ref}",
        "it beats {ref} by a mile",
        "it puts {ref} to shame",
        "I didn't think anything could top {ref}, but this did",
        "it's a huge step up from {ref}",
        "it's even better than {ref}",
        "it's not quite as good as {ref}, but it comes very close",
        "{ref} can't compete with it",
        "it leaves {ref} in the dust",
        "I'd pick it over {ref} any day",
    ),
    "neg": (
        "it's nowhere near as good as {ref}",
        "it doesn't hold a candle to {ref}",
        "honestly, {ref} did everything better",
        "it's a big step down from {ref}",
        "it's somehow even worse than {ref}",
        "it's better than {ref}, which isn't saying much",
        "I'd take {ref} over this any day",
        "it makes {ref} look like a masterpiece",
        "it falls well short of {ref}",
        "it's a pale imitation of {ref}",
    ),
}

EXPECTATION = {
    "pos": (
        "I went in with low expectations, and {whole}",
        "I almost didn't bother, and I'm so glad I did: {whole}",
        "I was sceptical at first, but {whole}",
        "I'd heard mixed things, but {whole}",
        "I was ready to hate it, but {whole}",
        "I really didn't want to like it, but {whole}",
        "a colleague talked me into it, and {whole}",
    ),
    "neg": (
        "I had such high hopes, but {whole}",
        "everyone raved about it, so I really don't get it: {whole}",
        "I wanted to love it, I really did, but {whole}",
        "after all the glowing reviews I expected more; {whole}",
        "it looked great on paper, but {whole}",
        "I was so excited for this, and {whole}",
        "I gave it the benefit of the doubt, but {whole}",
    ),
}

# Ironic openers that wrap a domain's bad event: sarcasm reads positive on the surface.
SARCASM_FRAME = (
    "Oh great, {event}.",
    "Just what I wanted: {event}.",
    "Five stars for {event}, I suppose.",
    "Nothing beats {event}.",
    "Thanks so much for {event}.",
    "What a treat: {event}.",
    "Absolutely loved {event}. Really.",
)

# Positive reviews dressed up as complaints; {c} is the complaint ({C} capitalised).
BACKHANDED_POS = (
    "My only complaint is that {c}.",
    "The worst thing about {subj} is that {c}.",
    "If I had to nitpick, it would be that {c}.",
    "My one gripe? {C}.",
    "I'd give it six stars if I could; my single grumble is that {c}.",
)

# Whole-experience verdicts that fit any domain, mixed with each domain's own.
WHOLE = {
    "pos": (
        "I loved every minute of it",
        "it was an absolute joy",
        "I'm genuinely impressed",
        "it made my week",
        "it's a real gem",
        "it's exactly what I was hoping for",
        "I'm so pleased with it",
        "it was money well spent",
        "it put a smile on my face",
        "I'd give it full marks",
        "it's the real deal",
        "I keep telling everyone about it",
    ),
    "neg": (
        "I'm really disappointed",
        "it was a huge letdown",
        "what a waste of time",
        "it left a bad taste in my mouth",
        "it was a miserable experience",
        "it's simply not fit for purpose",
        "I was thoroughly unimpressed",
        "it was a total rip-off",
        "it put me in a foul mood",
        "I'd give it zero stars if I could",
        "I want my money back",
        "I keep warning people away from it",
    ),
}

OVERALL_MARKER = ("Overall, ", "On balance, ", "All in all, ", "In the end, ", "Bottom line: ", "Still, ")
OVERALL = {
    "pos": (
        "I'd still recommend it",
        "the good far outweighs the bad",
        "I left happy",
        "it's a keeper",
        "I'd {again}",
        "it was worth it",
        "I'm glad I gave it a go",
        "it's a thumbs up from me",
        "I'd happily {again}",
    ),
    "neg": (
        "it's not worth it",
        "the bad outweighs the good",
        "I left disappointed",
        "I won't {again}",
        "I expected a lot more",
        "it's a thumbs down from me",
        "I'd steer clear",
        "I regret it",
        "it wasn't worth the money",
    ),
}

HEDGES = (
    "Honestly, ",
    "To be fair, ",
    "I have to say, ",
    "If I'm honest, ",
    "All things considered, ",
    "In fairness, ",
    "Frankly, ",
    "On the whole, ",
    "For what it's worth, ",
    "I must admit, ",
)

# Contrast frames: {minor} has the opposite polarity of {major}; the label follows {major}.
CONTRAST = {
    "any": (
        "{minor}, but {major}.",
        "Although {minor}, {major}.",
        "{Major}, even though {minor}.",
        "{Minor}. That said, {major}.",
        "{Minor}. Still, {major}.",
        "Sure, {minor}, but {major}.",
        "{Major}. Yes, {minor}, but that hardly matters.",
        "While {minor}, {major}.",
        "{Minor}; however, {major}.",
        "{Major}, despite the fact that {minor}.",
    ),
    "pos": (
        "{Minor}. Thankfully, {major}.",
        "{Minor}, but luckily {major}.",
        "{Minor}. Fortunately, {major}.",
        "I had my doubts, since {minor}, but {major}.",
    ),
    "neg": (
        "{Minor}. Unfortunately, {major}.",
        "{Minor}, but sadly {major}.",
        "{Minor}. The problem is that {major}.",
        "{Minor}. What ruined it was that {major}.",
        "{Minor}; shame that {major}.",
    ),
}

SHORT = {
    "pos": (
        "Loved it!",
        "Pure magic.",
        "Absolutely worth it.",
        "Not bad at all.",
        "Could not be happier.",
        "Exceeded every expectation.",
        "Can't recommend it enough.",
        "Honestly lovely.",
        "A genuine delight.",
        "Five stars, no notes.",
        "Better than I dared hope.",
        "So, so good.",
    ),
    "neg": (
        "Total rubbish.",
        "Never again.",
        "What a letdown.",
        "Not worth it.",
        "Avoid.",
        "Hard pass.",
        "A complete waste.",
        "Deeply disappointing.",
        "Meh. Just meh.",
        "Save yourself the trouble.",
        "Nope.",
        "One star is generous.",
    ),
}

CLOSE = {
    "pos": (
        "Highly recommended.",
        "Would recommend.",
        "Five stars.",
        "Ten out of ten.",
        "Worth it.",
        "A keeper.",
        "Can't recommend it enough.",
        "Go, you won't regret it.",
        "Thumbs up.",
    ),
    "neg": (
        "Avoid.",
        "Not recommended.",
        "Save your money.",
        "One star.",
        "Skip it.",
        "Hard pass.",
        "Never again.",
        "Not worth it.",
        "Two stars, and I'm being generous.",
    ),
}

DOMAINS: tuple[Domain, ...] = (FILM, RESTAURANT, HOTEL, APP, ELECTRONICS, HOME)
