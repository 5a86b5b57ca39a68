"""The review domains of the quickstart data, with the types every domain module uses.

Night-out domains live here (film, restaurant, hotel; told in the past tense); the product domains
(app, electronics, home) in `products.py`. Phrases that fit every domain are in
`lexicon.py`, whose docstring lists the placeholders the composer fills.
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
