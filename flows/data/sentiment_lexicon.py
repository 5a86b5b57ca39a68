"""Hand-written fragments that `make_sentiment` composes into short reviews.

Every string here was written for this project. Fragments are grouped by domain (what is reviewed)
and by polarity; the composer in `make_sentiment.py` decides how they combine and which label the
whole review gets. Placeholders filled by the composer:

- ``{be}`` / ``{benot}``: the copula in the domain's tense and the aspect's number
  ("was"/"were"/"is"/"are", "wasn't"/"weren't"/"isn't"/"aren't"); ``{could}``, ``{couldnt}``,
  ``{left}``, ``{felt}``, ``{came}``, ``{didnt}`` likewise ("could have been"/"could be", ...).
- ``{subj}``: the thing reviewed ("the film"); ``{ref}``: something it is compared with;
  ``{again}``: the domain's "do it again" verb phrase ("go back", "watch it again").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Aspect:
    """One reviewable facet of a domain ("the service"), with predicates that praise or pan it."""

    name: str
    nouns: tuple[str, ...]
    pos: tuple[str, ...]
    neg: tuple[str, ...]
    plural: bool = False


@dataclass(frozen=True)
class Domain:
    """Everything domain-specific: subjects, aspects, whole-experience clauses, sarcasm."""

    name: str
    tense: str  # "past" or "present": reviews of a night out are told, reviews of a gadget are described
    subjects: tuple[str, ...]
    refs: tuple[str, ...]
    again: tuple[str, ...]
    openers: tuple[str, ...]
    aspects: tuple[Aspect, ...]
    whole_pos: tuple[str, ...]
    whole_neg: tuple[str, ...]
    sarcasm: tuple[str, ...]
    events_neg: tuple[str, ...]
    only_complaint: tuple[str, ...]
    close_pos: tuple[str, ...]
    close_neg: tuple[str, ...]


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


def _a(
    name: str, nouns: tuple[str, ...], pos: tuple[str, ...], neg: tuple[str, ...], plural: bool = False
) -> Aspect:
    return Aspect(name=name, nouns=nouns, pos=pos, neg=neg, plural=plural)


FILM = Domain(
    name="film",
    tense="past",
    subjects=(
        "the film",
        "this movie",
        "the movie",
        "the sequel",
        "this remake",
        "the new thriller",
        "this comedy",
        "the documentary",
        "this horror film",
        "the animated feature",
        "this period drama",
        "the director's latest",
    ),
    refs=(
        "the original",
        "the first film",
        "the book",
        "the director's last film",
        "most films in the genre",
        "anything else out this year",
        "the stage version",
        "the trailer",
    ),
    again=("watch it again", "sit through it again", "see it again"),
    openers=(
        "Watched this with my partner last weekend.",
        "Caught the late showing on Friday.",
        "Saw it on a long-haul flight.",
        "Finally got round to watching this.",
        "Went in knowing nothing about it.",
        "Took my teenage kids to see this.",
        "Streamed it on a rainy Sunday afternoon.",
        "Saw this at a festival screening.",
    ),
    aspects=(
        _a(
            "acting",
            ("the acting", "the lead performance", "the cast"),
            (
                "was so natural you forgot they were acting",
                "carried every scene",
                "gave me chills more than once",
                "felt completely believable",
            ),
            (
                "was wooden from start to finish",
                "felt like a read-through",
                "made it impossible to care about anyone",
                "was painfully over the top",
            ),
        ),
        _a(
            "plot",
            ("the plot", "the story", "the storyline"),
            (
                "kept me guessing until the last scene",
                "was tight and clever",
                "actually surprised me",
                "pulled me in from the first minute",
            ),
            (
                "had more holes than a sieve",
                "was predictable from the first ten minutes",
                "went absolutely nowhere",
                "fell apart in the second half",
            ),
        ),
        _a(
            "pacing",
            ("the pacing", "the editing"),
            ("never let up", "was spot on, not a wasted scene", "made two hours fly by"),
            ("dragged terribly", "was glacial", "made two hours feel like four"),
        ),
        _a(
            "ending",
            ("the ending", "the final act", "the twist"),
            ("stuck the landing", "left me grinning", "made the whole thing click"),
            (
                "was a total cop-out",
                "came out of nowhere and made no sense",
                "undid everything that came before",
            ),
        ),
        _a(
            "score",
            ("the soundtrack", "the score", "the music"),
            ("was gorgeous", "gave me goosebumps", "fit every scene perfectly"),
            ("was intrusive and loud", "drowned out half the dialogue", "was instantly forgettable"),
        ),
        _a(
            "script",
            ("the dialogue", "the script", "the writing"),
            ("was sharp and genuinely funny", "crackled with wit", "felt fresh and honest"),
            ("was clunky and full of clichés", "made me cringe", "was painfully on the nose"),
        ),
        _a(
            "visuals",
            ("the cinematography", "the camera work", "the CGI"),
            ("was stunning", "looked incredible on the big screen", "was beautiful to look at"),
            ("looked cheap", "was so dark I could barely see anything", "looked like a video game from 2005"),
        ),
        _a(
            "humour",
            ("the humour", "the comedy"),
            ("landed every time", "had the whole cinema laughing"),
            ("fell completely flat", "was cringeworthy", "never landed once"),
        ),
    ),
    whole_pos=(
        "I was hooked from the opening scene",
        "it's the best thing I've seen all year",
        "I walked out of the cinema grinning",
        "it was worth every minute",
        "I haven't stopped thinking about it since",
        "it's a proper crowd-pleaser",
        "I was on the edge of my seat the whole way through",
    ),
    whole_neg=(
        "I checked my watch every ten minutes",
        "I nearly walked out halfway through",
        "it was two hours I'll never get back",
        "I'd forgotten most of it by the time I got home",
        "it was a complete slog",
        "I genuinely fell asleep",
        "it's a mess from start to finish",
    ),
    sarcasm=(
        "Two and a half hours of people staring moodily out of windows. Riveting.",
        "Loved how the villain explained his whole plan out loud. Very subtle.",
        "Nothing like a ninety-minute car chase to really develop the characters.",
        "Great, another sequel nobody asked for.",
        "What a treat to pay full price for a film that was mostly set-up for the next one.",
        "The twist was so obvious my dog saw it coming. Truly shocking stuff.",
    ),
    events_neg=(
        "a love triangle shoved into the last twenty minutes",
        "another cliffhanger with no payoff",
        "a plot twist I saw coming from the poster",
        "three endings, none of them satisfying",
        "a villain whose motive is explained in a single line",
    ),
    only_complaint=(
        "it had to end",
        "it wasn't longer",
        "I can't watch it for the first time again",
        "I saw it on a laptop instead of a big screen",
    ),
    close_pos=("Go and see it.", "An instant favourite.", "Bring on the sequel."),
    close_neg=("Wait for it to hit streaming. Or don't.", "Skip this one.", "Watch the original instead."),
)

RESTAURANT = Domain(
    name="restaurant",
    tense="past",
    subjects=(
        "the restaurant",
        "this place",
        "the bistro",
        "this little cafe",
        "the new ramen spot",
        "the steakhouse",
        "this pizzeria",
        "the tapas bar",
        "the food truck",
        "the brunch place",
        "this curry house",
        "the sushi place",
    ),
    refs=(
        "their other branch",
        "the place next door",
        "the last place we tried",
        "most places in town",
        "my mum's cooking",
        "the chain down the road",
    ),
    again=("go back", "eat here again", "book again"),
    openers=(
        "Went here for my mum's birthday.",
        "We stopped in for a quick lunch.",
        "Booked a table for six on a Saturday night.",
        "Came here on a friend's recommendation.",
        "Popped in after work with a couple of colleagues.",
        "Ordered takeaway from here on Friday.",
        "First visit, walked in without a booking.",
        "We had our anniversary dinner here.",
    ),
    aspects=(
        _a(
            "food",
            ("the food", "the main course", "my pasta", "the curry"),
            (
                "was cooked to perfection",
                "was packed with flavour",
                "was better than anything I've had in ages",
                "tasted like someone actually cared",
            ),
            (
                "arrived lukewarm",
                "was drowning in salt",
                "tasted like it came out of a microwave",
                "was bland and greasy",
            ),
        ),
        _a(
            "service",
            ("the service", "our waiter", "the waitress"),
            (
                "was warm and attentive",
                "made us feel like regulars",
                "couldn't have been friendlier",
                "knew the menu inside out",
            ),
            (
                "forgot half our order",
                "was painfully slow",
                "was downright rude",
                "ignored us for twenty minutes",
            ),
        ),
        _a(
            "portions",
            ("the portions", "the servings"),
            ("were generous", "were huge for the price", "left us stuffed"),
            ("were tiny for the price", "were laughably small", "would barely feed a toddler"),
            plural=True,
        ),
        _a(
            "dessert",
            ("the dessert", "the tiramisu", "the chocolate tart", "the cheesecake"),
            ("was worth the trip on its own", "was heavenly", "was the highlight of the night"),
            ("tasted stale", "was clearly from a packet", "was a sad, soggy mess"),
        ),
        _a(
            "atmosphere",
            ("the atmosphere", "the decor", "the vibe"),
            ("was cosy and relaxed", "was lovely and warm", "made it perfect for a date night"),
            (
                "was so loud we couldn't hear each other",
                "felt like a hospital canteen",
                "was cold and soulless",
            ),
        ),
        _a(
            "price",
            ("the bill", "the price"),
            ("was very reasonable", "was a pleasant surprise", "was fair for the quality"),
            ("was eye-watering for what we got", "was a rip-off", "made me wince"),
        ),
        _a(
            "wait",
            ("the wait", "the wait for a table"),
            ("was barely five minutes", "was short even on a busy night"),
            ("was over an hour", "was ridiculous, even with a booking"),
        ),
        _a(
            "drinks",
            ("the cocktails", "the drinks"),
            ("were creative and strong", "were worth the price alone"),
            ("were watered down", "were overpriced and warm"),
            plural=True,
        ),
    ),
    whole_pos=(
        "we were already planning our next visit before dessert",
        "it's our new favourite spot",
        "every bite was a delight",
        "it was the best meal we've had in months",
        "we left full and happy",
        "I'm still thinking about that sauce",
    ),
    whole_neg=(
        "we left hungry and annoyed",
        "I wouldn't go back if they paid me",
        "it was the worst meal we've had in years",
        "we ended up getting chips on the way home",
        "I was ill the next day",
        "the whole evening was a letdown",
    ),
    sarcasm=(
        "Nothing says fine dining like a forty-minute wait for lukewarm soup.",
        "Loved paying twenty pounds for three prawns and a smear of sauce.",
        "The waiter clearly had better places to be. So did we, as it turns out.",
        "Great, another place where the music is louder than your own thoughts.",
        "Brilliant idea to serve the steak on a plank so the juice runs into my lap.",
        "Really appreciated the complimentary hair in my pasta.",
    ),
    events_neg=(
        "cold chips and a forty-minute wait",
        "a bill with two drinks we never ordered",
        "soup that was colder than the wine",
        "a table right next to the toilets",
        "a steak that was more grey than medium rare",
    ),
    only_complaint=(
        "I was too full for dessert",
        "they don't open on Mondays",
        "it's so hard to get a table",
        "the portions were so big I couldn't finish",
    ),
    close_pos=("We'll be back.", "Book ahead, it's worth it.", "Already planning our next visit."),
    close_neg=("We won't be back.", "Eat elsewhere.", "Go next door instead."),
)

HOTEL = Domain(
    name="hotel",
    tense="past",
    subjects=(
        "the hotel",
        "this place",
        "the resort",
        "this B&B",
        "the guesthouse",
        "the boutique hotel",
        "this hostel",
        "the apartment",
        "the inn",
        "this lodge",
    ),
    refs=(
        "the photos online",
        "other hotels in the area",
        "the last place we stayed",
        "the chain hotel down the road",
        "most five-star places I've stayed in",
        "the hotel we had last year",
    ),
    again=("stay here again", "book this place again", "come back"),
    openers=(
        "Stayed three nights for a conference.",
        "We booked this for our anniversary.",
        "Spent a week here with the kids over half term.",
        "Only stayed one night on a road trip.",
        "Booked last minute after our original hotel fell through.",
        "Came here for a friend's wedding.",
        "Stayed here on a business trip.",
    ),
    aspects=(
        _a(
            "room",
            ("the room", "our room", "the suite"),
            (
                "was spotless and bigger than expected",
                "had a stunning view of the harbour",
                "was quiet, cosy and beautifully decorated",
            ),
            ("smelled of damp", "was tiny and dated", "had mould in the shower"),
        ),
        _a(
            "bed",
            ("the bed", "the mattress"),
            ("was like sleeping on a cloud", "was incredibly comfortable"),
            ("was rock hard", "sagged in the middle", "creaked every time I moved"),
        ),
        _a(
            "staff",
            ("the receptionist", "the front desk", "the concierge"),
            (
                "went above and beyond for us",
                "sorted out every request with a smile",
                "gave us brilliant tips for the area",
            ),
            ("was rude and unhelpful", "lost our booking", "couldn't have cared less"),
        ),
        _a(
            "breakfast",
            ("the breakfast", "the breakfast buffet"),
            ("was a proper feast", "had something for everyone", "was worth getting up early for"),
            (
                "was cold and picked over by eight",
                "was the saddest buffet I've ever seen",
                "ran out of coffee by nine",
            ),
        ),
        _a(
            "location",
            ("the location",),
            ("was perfect, five minutes from everything", "couldn't be beaten"),
            ("was miles from anything", "was on a noisy main road"),
        ),
        _a(
            "bathroom",
            ("the bathroom", "the shower"),
            ("was gleaming", "had amazing water pressure"),
            ("was filthy", "barely gave more than a trickle", "had someone else's hair in it"),
        ),
        _a(
            "wifi",
            ("the wifi", "the internet"),
            ("was fast everywhere in the building", "was quick and reliable"),
            ("barely worked", "dropped out every five minutes"),
        ),
        _a(
            "pool",
            ("the pool", "the spa"),
            ("was gorgeous and never crowded", "was the perfect way to unwind"),
            ("was closed for our entire stay", "was freezing and grubby"),
        ),
    ),
    whole_pos=(
        "it felt like a home away from home",
        "it made our trip",
        "we didn't want to leave",
        "it was worth every penny",
        "it's the best hotel I've stayed in for years",
        "we slept like babies every night",
    ),
    whole_neg=(
        "I wouldn't stay here again if it were free",
        "we checked out a day early",
        "I barely slept all week",
        "it ruined our trip",
        "it felt more like a prison than a hotel",
        "it was nothing like the photos",
    ),
    sarcasm=(
        "Loved the free wake-up call at 3am courtesy of the bar downstairs.",
        "The 'sea view' was a sliver of grey between two car parks. Breathtaking.",
        "Really enjoyed the surprise cold showers every morning.",
        "Nothing makes you feel welcome like being charged for a minibar you never opened.",
        "Great, a 'boutique' hotel, which apparently means a cupboard with a kettle.",
    ),
    events_neg=(
        "a room next to the lift shaft",
        "a shower that only ran cold",
        "a 'sea view' of the bins",
        "a fire alarm test at six in the morning",
        "a surprise resort fee at checkout",
    ),
    only_complaint=(
        "we had to leave",
        "we only booked two nights",
        "the breakfast was so good I ate far too much",
        "checkout came round far too fast",
    ),
    close_pos=("We're already planning a return trip.", "Book it.", "Will definitely be back."),
    close_neg=("Stay anywhere else.", "Never again.", "Book somewhere else."),
)

APP = Domain(
    name="app",
    tense="present",
    subjects=(
        "the app",
        "this app",
        "the new version",
        "this budgeting app",
        "the fitness app",
        "this language app",
        "the banking app",
        "this to-do app",
        "the photo editor",
        "this meditation app",
        "the weather app",
    ),
    refs=(
        "the old version",
        "the competition",
        "the free alternatives",
        "the website",
        "every other app I've tried",
        "the previous update",
    ),
    again=("keep using it", "renew my subscription", "reinstall it"),
    openers=(
        "I've been using this for about a month.",
        "Downloaded it after a friend recommended it.",
        "Switched over from a competitor last week.",
        "Been a paying subscriber for a year now.",
        "Installed it on both my phone and tablet.",
        "Tried the free trial before committing.",
    ),
    aspects=(
        _a(
            "ui",
            ("the interface", "the design", "the layout"),
            ("is clean and easy to find my way around", "is intuitive from the first tap", "looks gorgeous"),
            (
                "is cluttered and confusing",
                "hides everything behind three menus",
                "looks like it was designed in 2009",
            ),
        ),
        _a(
            "update",
            ("the latest update", "the new version"),
            ("fixed every bug I had", "runs without a single hiccup", "made everything snappier"),
            ("crashes every time I open it", "broke half the features", "wiped my saved settings"),
        ),
        _a(
            "speed",
            ("the loading time", "syncing", "the search"),
            ("is near instant", "is lightning fast"),
            ("takes forever", "is painfully slow"),
        ),
        _a(
            "battery",
            ("the battery drain", "the battery usage"),
            ("is barely noticeable", "is impressively low"),
            ("is horrendous", "kills my phone by lunchtime"),
        ),
        _a(
            "notifications",
            ("the notifications", "the reminders"),
            ("are helpful without being annoying", "are easy to tune"),
            ("are relentless", "won't stop even after I turn them off"),
            plural=True,
        ),
        _a(
            "support",
            ("customer support", "the support team"),
            ("replied within an hour and fixed my issue", "is quick and genuinely helpful"),
            ("never replied to my emails", "just sends copy-pasted answers"),
        ),
        _a(
            "pricing",
            ("the subscription", "the pricing"),
            ("is fair for what you get", "is worth every penny"),
            ("is a rip-off", "keeps creeping up", "locks basic features behind a paywall"),
        ),
        _a(
            "ads",
            ("the ads", "the pop-ups"),
            ("are rare and unobtrusive", "are barely there"),
            ("are everywhere", "appear every thirty seconds"),
            plural=True,
        ),
    ),
    whole_pos=(
        "it has genuinely changed how I organise my week",
        "I can't imagine my phone without it",
        "it does exactly what it promises",
        "I use it every single day",
        "it's worth the subscription and then some",
    ),
    whole_neg=(
        "I uninstalled it after two days",
        "I've gone back to pen and paper",
        "it's more trouble than it's worth",
        "I've cancelled my subscription",
        "it drains my patience as fast as my battery",
    ),
    sarcasm=(
        "Great, another update that logs me out every time I open it.",
        "Love how it asks me to rate it five stars right after it crashes.",
        "Really enjoying the thirty-second ad before I can check my balance.",
        "Nothing like a 'smart' reminder that goes off an hour after the meeting.",
        "Fantastic, the dark mode is now just a slightly darker grey.",
    ),
    events_neg=(
        "a forced update that deleted my settings",
        "a login screen that loops forever",
        "a pop-up asking me to upgrade every five minutes",
        "a sync that duplicates every entry",
    ),
    only_complaint=(
        "I didn't find it sooner",
        "there's no desktop version yet",
        "I've become slightly addicted to it",
    ),
    close_pos=("Download it.", "Worth the subscription.", "Five stars from me."),
    close_neg=("Uninstalled.", "Look elsewhere.", "Deleted."),
)

ELECTRONICS = Domain(
    name="electronics",
    tense="present",
    subjects=(
        "this speaker",
        "the laptop",
        "this smartwatch",
        "the e-reader",
        "this charger",
        "the keyboard",
        "this webcam",
        "the tablet",
        "the soundbar",
        "this camera",
        "the router",
        "this pair of earbuds",
    ),
    refs=(
        "my old one",
        "the previous model",
        "the brand-name version",
        "the one it replaced",
        "similar models at twice the price",
        "the pictures online",
    ),
    again=("buy it again", "buy another one", "order a second one"),
    openers=(
        "Bought this to replace my old one.",
        "Ordered it on sale.",
        "Got this as a birthday present.",
        "Picked this up for working from home.",
        "Been using it daily for three weeks now.",
        "Bought it after reading a lot of reviews.",
    ),
    aspects=(
        _a(
            "battery",
            ("the battery life", "the battery"),
            ("easily lasts two full days", "is genuinely impressive"),
            ("barely makes it through a morning", "dies without warning"),
        ),
        _a(
            "build",
            ("the build quality", "the casing"),
            ("feels solid and premium", "has survived a few drops already"),
            ("feels cheap and flimsy", "cracked within a week"),
        ),
        _a(
            "sound",
            ("the sound", "the audio"),
            ("is rich and clear", "has surprisingly deep bass"),
            ("is tinny and muffled", "crackles at any volume"),
        ),
        _a(
            "screen",
            ("the screen", "the display"),
            ("is bright and crisp", "is lovely even in sunlight"),
            ("is dim and washed out", "has a dead pixel right in the middle"),
        ),
        _a(
            "setup",
            ("the setup", "pairing"),
            ("takes less than five minutes", "is painless"),
            ("is a nightmare", "took me an entire evening"),
        ),
        _a(
            "price",
            ("the price",),
            ("is a steal for what you get", "is hard to beat"),
            ("is way too high for what you get", "is hard to justify"),
        ),
        _a(
            "connection",
            ("the Bluetooth connection", "the wifi signal"),
            ("never drops", "is rock solid"),
            ("drops constantly", "cuts out if I turn my head"),
        ),
        _a(
            "software",
            ("the companion app", "the firmware"),
            ("is simple and actually useful", "keeps getting better with updates"),
            ("is buggy and bloated", "needs an account just to change the volume"),
        ),
    ),
    whole_pos=(
        "it's the best purchase I've made this year",
        "I use it every day and love it",
        "it was worth every penny",
        "it does everything I wanted and more",
        "it's made working from home so much nicer",
    ),
    whole_neg=(
        "it's going straight back",
        "I regret buying it",
        "it stopped working after a month",
        "it was a complete waste of money",
        "I wish I'd kept my old one",
    ),
    sarcasm=(
        "Lasted a whole nine days before it stopped charging. Impressive.",
        "Love that it needs a firmware update every time I want to use it.",
        "Great, a 'wireless' speaker that has to stay plugged in to work.",
        "Truly cutting-edge: the screen is visible as long as you're indoors with the curtains shut.",
        "Brilliant noise cancelling, if the only noise you want cancelled is the music.",
    ),
    events_neg=(
        "a charger that died in a week",
        "earbuds that only play in one ear",
        "a battery that lasts about as long as a coffee break",
        "a keyboard that double-types every other letter",
    ),
    only_complaint=(
        "I didn't buy one years ago",
        "the box was a pain to open",
        "I now want one for every room",
    ),
    close_pos=("Buy it.", "Money well spent.", "No regrets."),
    close_neg=("Returned.", "Buy something else.", "Don't bother."),
)

HOME = Domain(
    name="home",
    tense="present",
    subjects=(
        "the blender",
        "this kettle",
        "the vacuum",
        "this air fryer",
        "the mattress",
        "this backpack",
        "the coffee machine",
        "this desk chair",
        "the frying pan",
        "this duvet",
        "the lamp",
        "this suitcase",
    ),
    refs=(
        "my old one",
        "the cheaper brand",
        "the one my parents have",
        "the picture on the website",
        "the one it replaced",
        "the big-name brands",
    ),
    again=("buy it again", "buy another", "get one for my sister"),
    openers=(
        "Bought this to replace my old one.",
        "Ordered it during the sales.",
        "Got this as a housewarming gift.",
        "We've had it for about two months now.",
        "Bought it after my last one finally gave up.",
        "Picked it up on a whim.",
    ),
    aspects=(
        _a(
            "quality",
            ("the build quality", "the material", "the stitching"),
            ("feels sturdy and built to last", "is much better than I expected for the price"),
            ("feels cheap and flimsy", "started fraying after a week"),
        ),
        _a(
            "design",
            ("the design", "the look"),
            ("is sleek and fits right in", "looks great in the kitchen"),
            ("is ugly and bulky", "takes up half the counter"),
        ),
        _a(
            "assembly",
            ("the assembly", "putting it together"),
            ("took ten minutes with no fuss", "was surprisingly easy"),
            ("took three hours and two arguments", "was a nightmare with missing screws"),
        ),
        _a(
            "value",
            ("the price", "the value"),
            ("is excellent for what you get", "is hard to argue with"),
            ("is a joke for something this flimsy", "is steep for what it is"),
        ),
        _a(
            "noise",
            ("the motor",),
            ("is impressively quiet", "purrs rather than roars"),
            ("is deafening", "sounds like a jet engine"),
        ),
        _a(
            "cleaning",
            ("cleaning it", "the cleanup"),
            ("is quick and easy", "takes seconds"),
            ("is a total pain", "takes longer than actually using it"),
        ),
        _a(
            "delivery",
            ("the delivery", "the customer service"),
            ("was fast and friendly", "sorted my issue straight away"),
            ("took three weeks", "was useless when it arrived damaged"),
        ),
        _a(
            "comfort",
            ("the comfort", "the padding"),
            ("is wonderful after a long day", "makes a real difference to my back"),
            ("is non-existent", "gave me a sore back within a week"),
        ),
    ),
    whole_pos=(
        "it's made my mornings so much easier",
        "I use it every day",
        "it was worth every penny",
        "it's the best thing I've bought for the house in ages",
        "it's genuinely made life easier",
    ),
    whole_neg=(
        "it broke within a month",
        "it's going back to the shop",
        "I wish I'd spent a bit more on a better one",
        "it was a total waste of money",
        "it's already gathering dust in the cupboard",
    ),
    sarcasm=(
        "Lovely kettle, if you enjoy your tea with a side of limescale and plastic.",
        "The 'non-stick' pan is non-stick in the sense that everything sticks to it.",
        "Great, a vacuum that mostly redistributes the dust.",
        "Love a suitcase whose wheel falls off in the airport car park.",
        "Really impressed that the chair started wobbling before I'd even sat on it properly.",
    ),
    events_neg=(
        "a blender that leaks all over the counter",
        "a duvet that sheds feathers everywhere",
        "a chair that squeaks every time I breathe",
        "a lid that pops off mid-blend",
    ),
    only_complaint=("I didn't buy one sooner", "the box was enormous", "my partner keeps stealing it"),
    close_pos=("Buy it.", "Would buy again.", "Great value."),
    close_neg=("Returned.", "Spend your money elsewhere.", "Don't bother."),
)

DOMAINS: tuple[Domain, ...] = (FILM, RESTAURANT, HOTEL, APP, ELECTRONICS, HOME)
