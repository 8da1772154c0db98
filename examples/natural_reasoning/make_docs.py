# ruff: noqa: RUF001, RUF002, RUF003
# (The corpus is typeset text: ×, −, ›, – and full-width CJK punctuation are meant.)
"""Write the invented web corpus for the NaturalReasoning-style curation example.

Why generate instead of scrape: the example must ship text the project wrote itself, and the
curation funnel (language filter, "is this reasoning-rich?" classifier, quality score, exam
question generation) is only worth showing on a realistic mix: mostly boilerplate and ordinary
narrative pages, a few pages in other languages, and a minority of reasoning-rich pages. Every
number in a worked problem is drawn from one seeded RNG and every stated answer is computed
here, so the reasoning pages are correct by construction.

Each output line is {"id", "url", "text", "kind", "lang"}; `kind` and `lang` are ground-truth
labels for evaluating the funnel, which must not read them.

    python examples/natural_reasoning/make_docs.py [--out PATH]

rewrites data/docs.jsonl byte-identically on every run (one seeded RNG, fixed key order, no
iteration over sets or hashes).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

SEED = 20240917
# Shares asked for: ~20% reasoning, ~47% narrative, ~25% boilerplate, ~8% non-English.
COUNTS = {"reasoning": 52, "narrative": 122, "boilerplate": 65, "non_english": 21}
DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "docs.jsonl"
MAX_CHARS = 6000

# ---------------------------------------------------------------------------------------------
# Invented vocabulary shared by every kind of page.
# ---------------------------------------------------------------------------------------------

FIRST_NAMES = [
    "Amara", "Ben", "Carla", "Dmitri", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonah",
    "Keiko", "Liam", "Maya", "Nils", "Olivia", "Priya", "Quentin", "Rosa", "Samuel", "Tessa",
    "Umar", "Vera", "Wes", "Yara", "Zoe", "Arthur", "Bea", "Callum", "Delia", "Ezra",
]  # fmt: skip
SURNAMES = [
    "Ashdown", "Brightwell", "Carrow", "Dunleavy", "Elston", "Fairley", "Gansworth", "Holloway",
    "Ingleby", "Jessop", "Kettering", "Lowther", "Marwood", "Netherby", "Oakhurst", "Pennock",
    "Quarles", "Redfern", "Sallow", "Thackery", "Upward", "Varley", "Wickham", "Yelland",
    "Brannock", "Coldwell", "Dorrance", "Fenmore",
]  # fmt: skip
TOWNS = [
    "Ashcombe Tarn", "Millbrook Ferry", "Port Elsin", "Harrowvale", "Kestrel Bay", "Dunmere",
    "Wrenfold", "Caldwater", "Eastmoor Cross", "Thornhollow", "Bramblecote", "Orrin's Ford",
    "Lowmarsh", "Fenwick Harbour", "Greyhallow", "Saltmere", "Oldcastle Cross", "Hebbleton",
    "Marlow Green", "Nettlewick",
]  # fmt: skip
STREETS = [
    "Mill Lane", "Station Road", "Quarry Street", "Harbour Walk", "Chapel Row", "Orchard Way",
    "Tanners Yard", "Bridge Street", "Market Square", "Linden Avenue", "Ropewalk", "Kiln Hill",
]  # fmt: skip
RIVERS = [
    "the Aller",
    "the Wend",
    "the Caldbeck",
    "the Sorrow Brook",
    "the Lune Water",
    "the Ashburn",
]
VENUES = [
    "the Corn Exchange", "Riverside Park", "the old tram depot", "St Aldric's Hall",
    "the Assembly Rooms", "the community sports centre", "the harbour green", "the Guildhall",
]  # fmt: skip
HANDLES = [
    "quietkettle", "rustybolt42", "fernandfrond", "late_train", "pixelgran", "moss_and_stone",
    "cobaltcat", "dave_in_the_shed", "tidewatcher", "second_breakfast", "oddsocks", "birchbark",
    "mathsmum", "gearhead_77", "slowcooker", "nightowl_ella", "kettlebell_ken", "paperplane",
]  # fmt: skip
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
]  # fmt: skip
TLDS = [".com", ".net", ".org", ".co.uk", ".blog", ".info", ".com", ".net"]
SITE_PARTS = {
    "news": (
        [
            "valley",
            "harbour",
            "county",
            "riverside",
            "northgate",
            "lakeshore",
            "midshire",
            "fenland",
        ],
        ["gazette", "courier", "herald", "dispatch", "ledger", "tribune", "bulletin", "post"],
    ),
    "travel": (
        ["wander", "slowroad", "backpack", "farhorizon", "trailside", "compass", "suitcase"],
        ["diaries", "notes", "journal", "tales", "miles", "postcards"],
    ),
    "recipe": (
        ["butter", "copperpot", "saltandthyme", "homestove", "crumb", "sundaytable", "ladle"],
        ["kitchen", "recipes", "cooks", "pantry", "table", "bakes"],
    ),
    "review": (
        ["gearcheck", "honest", "benchtest", "plainspec", "handson", "weekendtest", "tested"],
        ["reviews", "lab", "verdict", "picks", "guide"],
    ),
    "bio": (
        ["forgotten", "localheritage", "lives", "portrait", "archive", "parish"],
        ["lives", "biographies", "people", "history", "profiles"],
    ),
    "event": (
        ["whatson", "goingout", "townhall", "weekender", "eventsin", "dayout"],
        ["listings", "guide", "events", "calendar", "diary"],
    ),
    "forum": (
        ["tinker", "allotment", "commuter", "bookworm", "retrotech", "homebrew", "birdtable"],
        ["forum", "boards", "community", "talk", "club"],
    ),
    "history": (
        ["heritage", "oldmaps", "canalside", "pastandpresent", "localpast", "milestone"],
        ["society", "trust", "history", "archive", "stories"],
    ),
    "edu": (
        [
            "stepwise",
            "worked",
            "chalkdust",
            "proofpad",
            "mathcorner",
            "physicsnotes",
            "quantlab",
            "tutorhub",
            "problemset",
            "slidecalc",
            "numberline",
            "firstprinciples",
        ],
        ["notes", "academy", "tutor", "learn", "wiki", "help", "lessons", "school"],
    ),
    "shop": (
        ["bargain", "homeware", "outdoor", "brightbuy", "cornershop", "gadget", "craftsupply"],
        ["store", "shop", "direct", "outlet", "market", "depot"],
    ),
    "misc": (
        ["daily", "open", "bright", "simple", "modern", "urban", "green", "clever"],
        ["hub", "portal", "place", "world", "online", "central"],
    ),
}


@dataclass(frozen=True)
class Site:
    """An invented web site: the domain in the URL and the name its pages print."""

    domain: str
    name: str


def make_site(rng: random.Random, family: str, tlds: list[str] | None = None) -> Site:
    """Invent a plausible domain from two word lists; the display name is its title case."""
    first, second = SITE_PARTS[family]
    a, b = rng.choice(first), rng.choice(second)
    sep = "-" if rng.random() < 0.25 else ""
    domain = f"{a}{sep}{b}{rng.choice(tlds or TLDS)}"
    return Site(domain=domain, name=f"{a.title()} {b.title()}")


def slug(title: str) -> str:
    """URL path segment from a title, as most blog engines make it."""
    words = re.findall(r"[a-z0-9]+", title.lower().replace("'", ""))
    return "-".join(words[:9]) or "page"


def person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}"


def date_str(rng: random.Random, lo: int = 2019, hi: int = 2024) -> str:
    year, month, day = rng.randint(lo, hi), rng.randrange(12), rng.randint(1, 28)
    style = rng.randrange(4)
    if style == 0:
        return f"{MONTHS[month]} {day}, {year}"
    if style == 1:
        return f"{day} {MONTHS[month]} {year}"
    if style == 2:
        return f"{year}-{month + 1:02d}-{day:02d}"
    return f"{MONTHS[month][:3]} {day} {year}"


def num(x: float, nd: int = 2) -> str:
    """A number as a person writes it: thousands commas, no trailing zeros."""
    s = f"{x:,.{nd}f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s == "-0" else s


def sci(x: float) -> str:
    """Scientific notation in the plain-text style of web pages: 1.23 × 10^23."""
    mant, exp = f"{x:.2e}".split("e")
    return f"{mant} × 10^{int(exp)}"


def paren(v: int) -> str:
    """A negative number inside an expression gets brackets: 4 × (-35), not 4 × -35."""
    return f"({v})" if v < 0 else str(v)


def frac(f: Fraction) -> str:
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def slots(rng: random.Random) -> dict[str, str]:
    """One consistent set of invented names and numbers for a page's templates."""
    town, town2 = rng.sample(TOWNS, 2)
    old = rng.randint(1790, 1935)
    first, first2, first3 = rng.sample(FIRST_NAMES, 3)
    sur, sur2, sur3 = rng.sample(SURNAMES, 3)
    return {
        "town": town,
        "town2": town2,
        # A quote refers back to {person} as {sur}, so the two must agree.
        "person": f"{first} {sur}",
        "person2": f"{first2} {sur2}",
        "person3": f"{first3} {sur3}",
        "sur": sur,
        "sur2": sur2,
        "street": rng.choice(STREETS),
        "river": rng.choice(RIVERS),
        "venue": rng.choice(VENUES),
        "weekday": rng.choice(WEEKDAYS),
        "month": rng.choice(MONTHS),
        "day": str(rng.randint(2, 28)),
        "year": str(rng.randint(2019, 2024)),
        "old_year": str(old),
        "old_year2": str(old + rng.randint(8, 40)),
        "few": str(rng.randint(3, 9)),
        "dozen": str(rng.randint(11, 60)),
        "hundreds": str(rng.randint(120, 950)),
        "thousands": f"{rng.randint(12, 480) * 100:,}",
        "pct": str(rng.randint(4, 38)),
        "millions": num(rng.randint(12, 98) / 10, 1),
        "cur": rng.choice(["$", "£", "€"]),
        "price": str(rng.randint(4, 60)),
        "room": str(rng.randint(45, 160)),
        "big_price": str(rng.randint(35, 420)),
        "minutes": str(rng.randint(10, 55)),
        "minutes2": str(rng.randint(10, 55)),
        "hour": str(rng.randint(9, 11)),
        "pm_hour": str(rng.randint(5, 8)),
        "rating": str(rng.randint(3, 5)),
        "age": str(rng.randint(34, 91)),
        "handle": rng.choice(HANDLES),
        "handle2": rng.choice(HANDLES),
    }


def fill(template: str, values: dict[str, str]) -> str:
    return template.format_map(values)


# ---------------------------------------------------------------------------------------------
# Web chrome: the navigation, share, cookie and footer lines real pages wrap around content.
# ---------------------------------------------------------------------------------------------

SECTIONS = {
    "news": ["Home", "News", "Local", "Politics", "Business", "Sport", "Weather", "Opinion",
             "Obituaries", "Puzzles", "Contact", "E-edition", "Jobs"],
    "travel": ["Home", "Destinations", "Europe", "Asia", "Road Trips", "Packing Lists",
               "About Me", "Work With Me", "Shop", "Newsletter"],
    "recipe": ["Home", "Recipes", "Dinner", "Baking", "Vegetarian", "Quick & Easy", "Seasonal",
               "Cookbook", "About", "Subscribe"],
    "review": ["Home", "Reviews", "Best Picks", "Deals", "Kitchen", "Tools", "Audio", "Outdoor",
               "How We Test", "Newsletter"],
    "bio": ["Home", "People", "Places", "Archive", "Timeline", "Contribute", "About"],
    "event": ["What's On", "Today", "This Weekend", "Music", "Family", "Markets", "Sport",
              "Submit an Event", "Venues"],
    "forum": ["Forums", "New Posts", "Members", "Search", "Rules", "Log in", "Register", "Help"],
    "history": ["Home", "Our History", "Collections", "Walks", "Publications", "Membership",
                "Events", "Contact"],
    "edu": ["Home", "Courses", "Algebra", "Calculus", "Probability", "Physics", "Chemistry",
            "Economics", "Practice", "Forum", "Log in"],
    "shop": ["Home", "New In", "Sale", "Kitchen", "Garden", "Tools", "Gifts", "Basket (0)",
             "Sign in", "Help"],
    "misc": ["Home", "About", "Blog", "Services", "Contact", "FAQ", "Login"],
}  # fmt: skip

COOKIE_NOTES = [
    "We use cookies to improve your experience on our site. By continuing to browse you agree "
    "to our use of cookies. Accept | Manage preferences",
    "This website uses cookies. Some are essential to make the site work; others help us "
    "understand how you use it so we can improve it. Accept all | Reject non-essential | "
    "Settings",
    "Cookie notice: we and our partners store and access information on your device for "
    "personalised ads and content, ad and content measurement, and audience insights. You can "
    "change your choices at any time under Privacy settings at the bottom of every page.",
    "Yes, we use cookies. Find out more in our cookie policy. OK, got it",
    "By clicking Accept, you agree to the storing of cookies on your device to enhance site "
    "navigation, analyse site usage, and assist in our marketing efforts.",
    "Your privacy matters to us. We use strictly necessary cookies and, with your consent, "
    "analytics cookies. Allow all / Only necessary",
    "We value your privacy\nWe use cookies to personalise content and ads, to provide social "
    "features and to analyse our traffic. Customise | Reject All | Accept All",
    "This site stores small files on your device. Continue | Learn more",
]
SHARE_LINES = [
    "Share this | Tweet | Email",
    "Share: Post · Email · Copy link",
    "Share this article\nEmail\nPrint\nCopy link",
    "Like this? Share it with a friend.",
    "Tweet | Pin | Email | Print",
    "Share on social media",
    "Was this article helpful? Yes / No",
    "SHARE  ·  SAVE  ·  PRINT",
    "Share this post: Email | Copy link | More",
]
FOOTER_LINKS = [
    "Privacy Policy", "Terms of Use", "Cookie Settings", "Contact Us", "About", "Advertise",
    "Careers", "Accessibility", "Sitemap", "Do Not Sell My Information", "Help", "Press",
]  # fmt: skip
RELATED_TITLES = [
    "Ten easy weeknight dinners under thirty minutes",
    "Why the bus timetable is changing again",
    "Readers' photos: the best of autumn colour",
    "The quiet comeback of the village shop",
    "Five walks with a pub at the end",
    "What to plant in the garden this month",
    "Council tax: what the new bands mean for you",
    "Our favourite budget headphones, tested",
    "A beginner's guide to sourdough starters",
    "The week in pictures",
    "How to keep your home warm without breaking the bank",
    "Letters to the editor",
    "Road closures planned for the summer",
    "The best picnic spots by the water",
    "Crossword and puzzles",
    "Three cosy cafes worth the detour",
]


def nav_line(rng: random.Random, site: Site, family: str) -> str:
    items = rng.sample(SECTIONS[family], rng.randint(4, min(8, len(SECTIONS[family]))))
    style = rng.randrange(5)
    if style == 0:
        return " | ".join(items)
    if style == 1:
        return "Skip to main content\n" + " · ".join(items)
    if style == 2:
        return "\n".join(items)
    if style == 3:
        return f"{site.name}\nMenu\n" + " / ".join(items) + "\nSearch"
    return f"☰ Menu  {site.name}  Search  Subscribe"


def byline(rng: random.Random) -> str:
    style = rng.randrange(5)
    if style == 0:
        return f"By {person(rng)} | {date_str(rng)}"
    if style == 1:
        return f"Posted on {date_str(rng)} by {rng.choice(HANDLES)}"
    if style == 2:
        return f"{date_str(rng)} · {rng.randint(2, 14)} min read"
    if style == 3:
        return f"Written by {person(rng)}. Last updated {date_str(rng)}."
    return f"Updated {date_str(rng)}"


def footer(rng: random.Random, site: Site) -> str:
    links = " | ".join(rng.sample(FOOTER_LINKS, rng.randint(3, 6)))
    year = rng.randint(2020, 2024)
    style = rng.randrange(3)
    if style == 0:
        return f"© {year} {site.name}. All rights reserved.\n{links}"
    if style == 1:
        return f"{links}\nCopyright {year} {site.name}"
    return f"Back to top ↑\n{links}\n© {site.name} {year}"


def page(
    rng: random.Random,
    site: Site,
    family: str,
    title: str,
    body: list[str],
    *,
    chrome: float = 0.6,
    with_byline: bool = True,
) -> str:
    """Wrap content blocks in the chrome a text extractor typically leaves behind."""
    blocks: list[str] = []
    if rng.random() < chrome:
        blocks.append(nav_line(rng, site, family))
    if rng.random() < chrome * 0.35:
        crumb = title if len(title) <= 40 else title[:40].rsplit(" ", 1)[0] + "…"
        blocks.append(" › ".join(["Home", rng.choice(SECTIONS[family][1:]), crumb]))
    blocks.append(title)
    if with_byline and rng.random() < 0.6:
        blocks.append(byline(rng))
    blocks.extend(body)
    if rng.random() < chrome * 0.6:
        blocks.append(rng.choice(SHARE_LINES))
    if rng.random() < chrome * 0.4:
        blocks.append("Related:\n" + "\n".join(rng.sample(RELATED_TITLES, 3)))
    if rng.random() < chrome * 0.5:
        blocks.append(rng.choice(COOKIE_NOTES))
    if rng.random() < chrome * 0.6:
        blocks.append(footer(rng, site))
    return "\n\n".join(blocks)


def url_for(rng: random.Random, site: Site, title: str, section: str) -> str:
    style = rng.randrange(4)
    s = slug(title)
    if style == 0:
        return f"https://{site.domain}/{section}/{rng.randint(2019, 2024)}/{s}"
    if style == 1:
        return f"https://www.{site.domain}/{s}/"
    if style == 2:
        return f"https://{site.domain}/{section}/{s}-{rng.randint(1000, 99999)}"
    return f"https://{site.domain}/p/{rng.randint(100000, 999999)}/{s}"


PAGE_COMMENTS = [
    "Great explanation, thank you! This finally clicked for me.",
    "Could you do a post on a harder version of this?",
    "I printed this out for my study group.",
    "Clear and to the point. More of these please.",
    "My teacher used a different method but got the same answer, nice to see both.",
    "Bookmarked for exam season.",
    "Small typo in the second paragraph, but otherwise really helpful.",
    "I wish my textbook explained it like this.",
]
READER_COMMENTS = {
    "community": [
        "I remember my grandparents talking about this.",
        "Not sure I agree with all of it, but an interesting read.",
        "Typical, nobody asked the residents what they wanted.",
        "Thank you for writing about our town, it doesn't get much attention.",
        "Can you do a follow-up in a few months?",
        "My family has lived here for four generations and I never knew half of this.",
        "Great to see some good news for a change.",
        "Does anyone know if there are photographs of this in the library?",
    ],
    "lifestyle": [
        "Lovely piece, brought back a lot of memories.",
        "We were there last summer and it was just as described.",
        "Does anyone know if this is still running next year?",
        "Shared this with my family, they loved it.",
        "Saving this for our next trip, thank you!",
        "Went yesterday on the strength of this and wasn't disappointed.",
        "First time commenting, long time reader. Keep it up!",
        "Bookmarked for later, thanks for the detail.",
    ],
    "recipe": [
        "Made this last night and the whole family loved it. Will make again!",
        "Can I use frozen instead of fresh? Thanks.",
        "Added a pinch of chilli flakes, delicious.",
        "Worked perfectly with gluten-free flour.",
        "How long does it keep in the fridge?",
        "Five stars, so easy and my kids actually ate it.",
        "I halved the sugar and it was still lovely.",
        "This has become a weekly staple in our house.",
    ],
}
# Which comment pool a genre's pages draw from; the rest use "lifestyle".
COMMENT_POOL = {"recipe": "recipe", "news": "community", "history": "community",
                "bio": "community", "event": "community"}  # fmt: skip


def comment_block(rng: random.Random, pool: list[str], k: int) -> str:
    """A comment section: handle, age of the comment, text."""
    lines = [f"Comments ({k + rng.randint(0, 9)})"]
    for text in rng.sample(pool, k):
        days = rng.randint(1, 11)
        lines.append(f"{rng.choice(HANDLES)} · {days} day{'s' if days > 1 else ''} ago\n{text}")
    return "\n\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Narrative and informational English: news, travel, recipes, reviews, biographies, events,
# forum chit-chat, local history. Full of facts and numbers, but no worked reasoning.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topic:
    """One subject a genre writes about: a title template and its paragraph templates.

    A paragraph given as a tuple holds alternative wordings; each page picks one, so two pages
    on the same subject do not share whole paragraphs."""

    title: str
    paragraphs: tuple[str | tuple[str, ...], ...]


def wording(rng: random.Random, paragraph: str | tuple[str, ...]) -> str:
    return paragraph if isinstance(paragraph, str) else rng.choice(paragraph)


def scale_recipe(text: str, servings: int) -> str:
    """Rescale an ingredient list written for four, as recipe sites' serving pickers do."""
    if not text.startswith("Ingredients"):
        return text
    factor = servings / 4

    def scaled(m: re.Match[str]) -> str:
        value = float(m.group(1)) * factor
        return f"{num(value, 1 if value < 10 else 0)} {m.group(2)}"

    text = re.sub(r"(\d+(?:\.\d+)?) (g|ml|litres)\b", scaled, text)
    text = re.sub(r"serves \d+", f"serves {servings}", text)
    return re.sub(
        r"makes about (\d+)", lambda m: f"makes about {round(int(m.group(1)) * factor)}", text
    )


@dataclass(frozen=True)
class Genre:
    """A kind of narrative page; `extras` are paragraphs that fit any of its topics."""

    family: str
    section: str
    count: int
    topics: tuple[Topic, ...]
    extras: tuple[str, ...]


NEWS = Genre(
    family="news",
    section="news",
    count=22,
    topics=(
        Topic(
            "Council approves new footbridge over {river} at {town}",
            (
                "Plans for a new footbridge over {river} at {town} were approved by the "
                "district council's planning committee on {weekday} evening, ending a debate "
                "that has run for almost a decade.",
                "The steel and timber bridge will link {street} with the playing fields on the "
                "far bank, replacing a ferry crossing that stopped running in the 1970s. "
                "Construction is expected to begin in the spring and to last around {few} "
                "months, with a budget of {cur}{millions} million.",
                "Councillor {person} told the meeting that the bridge would make it easier for "
                "children to walk to school. “At the moment families face a detour of almost two "
                "miles along a road with no pavement,” {sur} said.",
                "Not everyone was in favour. A group of residents on the far bank raised "
                "concerns about parking and about the loss of {dozen} mature willow trees, "
                "several of which will be replanted further downstream.",
            ),
        ),
        Topic(
            "{town} library reopens after year-long renovation",
            (
                "The public library in {town} reopened its doors on {weekday} after a "
                "renovation that took just over a year and cost {cur}{millions} million.",
                "Visitors queued along {street} before the ribbon was cut at {hour} o'clock. "
                "Inside, the old reading room has been restored with its original plaster "
                "ceiling, while the children's section has moved to a bright new extension "
                "overlooking the garden.",
                "Head librarian {person} said the building had welcomed more than {hundreds} "
                "people in its first morning. “We have missed our regulars, and it is lovely "
                "to see so many new faces too,” {sur} said.",
                "The library will now open seven days a week, with late opening until "
                "{pm_hour} pm on Thursdays. A new local history room holds maps, parish "
                "records and photographs donated by residents.",
            ),
        ),
        Topic(
            "Storm brings down trees and cuts power to homes across {town}",
            (
                "Strong winds overnight brought down trees and power lines across {town}, "
                "leaving around {thousands} homes without electricity on {weekday} morning.",
                "Gusts of more than seventy miles an hour were recorded on the coast. A large "
                "beech tree fell across {street}, blocking the road for most of the day, and "
                "part of the roof of {venue} was torn away.",
                "Engineers worked through the day to restore supplies, and the network operator "
                "said all but a few hundred properties had been reconnected by the evening. "
                "No serious injuries were reported.",
                "Residents were advised to stay away from fallen cables and to report damage "
                "to the council. Several schools in the area closed for the day as a "
                "precaution.",
            ),
        ),
        Topic(
            "Burst water main floods {street} in {town}",
            (
                "A burst water main flooded part of {street} in {town} early on {weekday}, "
                "sending water into the cellars of several shops and closing the road to "
                "traffic.",
                "Water company engineers arrived within an hour and isolated the pipe, which "
                "was laid more than {dozen} years ago. Homes in the surrounding streets "
                "experienced low pressure or discoloured water for much of the day.",
                "Shop owner {person} said the water had reached the top of the cellar steps. "
                "“We lost some stock, but it could have been much worse,” {sur} said.",
                "The company apologised for the disruption and said the section of main would "
                "be replaced as part of a wider programme of work planned for next year.",
            ),
        ),
        Topic(
            "{town} pupils win regional robotics competition",
            (
                "A team of pupils from {town} Community School has won a regional robotics "
                "competition, beating {dozen} other schools from across the county.",
                "The team of {few} students, aged between twelve and fourteen, built a small "
                "robot that could sort coloured blocks and climb a ramp. They spent most "
                "lunchtimes since {month} refining its design.",
                "Teacher {person} said the pupils had shown remarkable persistence. “The robot "
                "fell apart the week before the final, and they rebuilt it in two evenings,” "
                "{sur} said.",
                "The team will now travel to the national final, where they will compete "
                "against the winners of eleven other regions.",
            ),
        ),
        Topic(
            "Former bank on {street} reopens as bakery and cafe",
            (
                "A former bank building on {street} in {town} has been given a new life as a "
                "bakery and cafe, after standing empty for {few} years.",
                "Owners {person} and {person2} kept the original wooden counter and the old "
                "strongroom door, which now opens into a small room used for baking classes.",
                "The cafe employs {dozen} people and opens from seven in the morning. On its "
                "first weekend, the bakery sold out of bread by early afternoon both days.",
                "The town's business association welcomed the opening, saying it was a sign of "
                "growing confidence in the high street.",
            ),
        ),
        Topic(
            "{town} Rovers lift county cup after dramatic final",
            (
                "{town} Rovers won the county cup for the first time in {dozen} years on "
                "{weekday}, beating {town2} Athletic in a final that went to extra time.",
                "Rovers fell behind early in the second half but equalised with a header from "
                "a corner ten minutes from the end. The winning goal came in the final minute "
                "of extra time, a low shot from the edge of the area by captain {person}.",
                "More than {hundreds} supporters travelled to the match, and the team were "
                "greeted by a crowd outside the clubhouse when they returned that evening.",
                "Manager {person2} praised the squad's spirit. “Nobody gave up, not for a "
                "second,” {sur2} said after the game.",
            ),
        ),
        Topic(
            "Changes to bus route 14 anger {town} residents",
            (
                "Passengers in {town} have criticised plans to reduce the number 14 bus from "
                "an hourly service to one bus every two hours from next month.",
                "The operator says passenger numbers on the route have fallen by {pct} percent "
                "since 2019, and that the change will allow it to keep the service running at "
                "all. Evening and Sunday journeys will also be withdrawn.",
                "{person}, who uses the bus to reach work in {town2}, said the new timetable "
                "would make the journey impossible. “The last bus back will leave before my "
                "shift ends,” {sur} said.",
                "A petition calling for the decision to be reversed has gathered more than "
                "{hundreds} signatures, and the issue will be raised at the next meeting of the "
                "transport committee.",
            ),
        ),
        Topic(
            "New outpatient wing opens at {town} General Hospital",
            (
                "A new outpatient wing has opened at {town} General Hospital, bringing clinics "
                "that were spread across three sites under one roof.",
                "The two-storey building includes {dozen} consulting rooms, a children's "
                "waiting area and a pharmacy. It was paid for partly through a fundraising "
                "appeal that raised {cur}{hundreds},000 from local people.",
                "Nurse manager {person} said staff had been involved in the design from the "
                "start. “Small things, like where the windows are, make a real difference to "
                "patients who are anxious,” {sur} said.",
                "The first clinics moved in on {weekday}, and the remaining services will "
                "transfer over the next few weeks.",
            ),
        ),
        Topic(
            "Volunteers clear {hundreds} bags of litter from {river}",
            (
                "Volunteers collected {hundreds} bags of litter from the banks of {river} near "
                "{town} during a clean-up on {weekday}.",
                "Among the more unusual finds were a shopping trolley, a set of garden chairs "
                "and a bicycle that had clearly been in the water for many years.",
                "Organiser {person} said the event had attracted families, students and "
                "members of local walking groups. “It is sad how much we find, but people "
                "really enjoyed doing something useful together,” {sur} said.",
                "The group meets on the first Sunday of every month and provides gloves and "
                "litter pickers. New volunteers are welcome.",
            ),
        ),
        Topic(
            "Fire crews tackle warehouse blaze in {town}",
            (
                "Fire crews from {town} and {town2} were called to a warehouse fire on the "
                "edge of {town} shortly after midnight on {weekday}.",
                "At the height of the fire, {few} engines were at the scene. Residents in "
                "nearby houses were advised to keep their windows and doors closed because of "
                "the smoke.",
                "Nobody was injured. The building, which was used to store furniture, was "
                "badly damaged, and an investigation into the cause is under way.",
                "Station manager {person} thanked residents for their patience while roads "
                "around the site remained closed for most of the morning.",
            ),
        ),
    ),
    extras=(
        "Residents who want to comment can contact the council's customer service team or "
        "attend the next public meeting on {weekday} {day} {month} at {venue}.",
        "{person3}, who has lived in {town} for more than {dozen} years, said the news had "
        "been the main topic of conversation in the town all week. “Everyone has an opinion, "
        "and most of them are shared loudly at the bus stop,” came the reply when we asked.",
        "A spokesperson for the county council said further updates would be published on its "
        "website and shared with local community groups.",
        "Local businesses on {street} said they hoped the news would bring more visitors into "
        "the town centre, which has struggled since the weekly market closed.",
        "Weather forecasters expect a mostly dry week ahead, with temperatures close to the "
        "seasonal average and a chance of showers at the weekend.",
        "This article was updated at {hour}:15 to include a statement from the council.",
        "Do you have a story for us? Contact the newsdesk by email or message us on our social "
        "channels.",
        "The council's leader, {person2}, said the authority would listen to all views before "
        "any further decisions were made.",
        "Figures published last month show that the population of {town} has grown by {pct} "
        "percent over the past decade, putting pressure on roads, schools and surgeries.",
        "In other news this week, the annual flower show at {venue} raised a record amount "
        "for charity, and work to resurface the car park on {street} finished two days ahead "
        "of schedule.",
    ),
)

TRAVEL = Genre(
    family="travel",
    section="blog",
    count=16,
    topics=(
        Topic(
            "A slow weekend in {town}: harbour walks, fish suppers and sea air",
            (
                "We arrived in {town} on a grey Friday evening, just as the fishing boats were "
                "coming back into the harbour. The guesthouse was up a steep lane behind the "
                "church, and from our window we could see the lighthouse blinking at the end "
                "of the pier.",
                "On Saturday we followed the coast path east for about {few} miles, past a ruined "
                "lime kiln and a cove where seals were lying on the rocks. The path is narrow "
                "in places, so good shoes are a must.",
                "Dinner both nights was at a small place on the quay that only serves whatever "
                "was landed that morning. We had grilled mackerel with new potatoes and a "
                "sharp green salad, and it was one of the best meals of the year.",
                "Sunday morning was for the market, where we bought smoked fish, a jar of "
                "local honey and far too many postcards.",
            ),
        ),
        Topic(
            "Hiking the ridge above {town}: our route and tips",
            (
                "The ridge above {town} had been on my list for years, and we finally walked "
                "it in {month}. The route starts at the car park behind the village hall and "
                "climbs steadily through beech woods before opening out onto the moor.",
                "Once on the ridge, the views stretch across the valley to {town2} and, on a "
                "clear day, all the way to the sea. We saw skylarks, a kestrel and a herd of "
                "ponies grazing near the old boundary stones.",
                "The whole loop took us about {few} hours with plenty of stops. The descent on "
                "the far side is steep and loose, so walking poles helped a lot.",
                "There is no cafe at the top, so bring water and snacks. The pub in the "
                "village does good soup and lets muddy walkers in without complaint.",
            ),
        ),
        Topic(
            "By slow train from {town} to {town2}",
            (
                "There is a faster way to get from {town} to {town2}, but it involves a "
                "motorway and misses everything worth seeing. The branch line takes just over "
                "two hours and stops at every village along the valley.",
                "The carriages are old and a little creaky, and the conductor knows most of "
                "the passengers by name. We shared a table with a retired couple heading to a "
                "garden fair who told us which side of the train to sit on for the viaduct.",
                "The viaduct itself is the highlight: {dozen} arches high above {river}, with "
                "the town spread out below. Everyone in the carriage went quiet as we crossed.",
                "We spent the afternoon in {town2} wandering the old streets before catching "
                "the last train back as the sun set over the hills.",
            ),
        ),
        Topic(
            "Day trip to the island: ferry, lighthouse and a very windy picnic",
            (
                "The ferry to the island leaves {town} three times a day in summer, and the "
                "crossing takes about forty minutes. We caught the first boat and had the deck "
                "almost to ourselves.",
                "The island is small enough to walk around in a morning. The path passes a "
                "chapel with a turf roof, a colony of puffins on the cliffs, and a lighthouse "
                "that you can climb for a small donation.",
                "Our picnic on the north shore was a battle with the wind, and we lost a "
                "paper plate to the gulls, but the view back to the mainland was worth it.",
                "Check the ferry times before you go, because the last boat back leaves "
                "early and there is nowhere to stay on the island itself.",
            ),
        ),
        Topic(
            "Kayaking and camping on the lake near {town}",
            (
                "We rented two kayaks from the boathouse at the southern end of the lake and "
                "paddled north along the wooded shore. The water was glassy in the morning "
                "and we could see fish moving in the shallows.",
                "The campsite is on a small peninsula that can only be reached by boat, with "
                "{few} pitches, a fire ring and a composting toilet. We had it to ourselves "
                "apart from a family of ducks.",
                "After dark the sky was full of stars, and we heard owls calling across the "
                "water. In the morning, mist lay on the lake until almost nine.",
                "Bookings open in March and the pitches go quickly, so plan ahead if you want "
                "a summer weekend.",
            ),
        ),
        Topic(
            "Eating our way through the old market in {town}",
            (
                "The covered market in {town} has been trading on the same spot for centuries, "
                "and on a Saturday morning it is loud, crowded and full of wonderful smells.",
                "We started with coffee and a warm cinnamon bun, then worked our way past "
                "cheese stalls, a butcher with a queue out the door and a tiny counter selling "
                "dumplings made by two sisters.",
                "My favourite find was a stall selling pickles of every colour, run by a man "
                "who insisted we taste at least {few} before buying anything.",
                "Go early, bring cash for the smaller stalls, and leave room for lunch, "
                "because you will want to try everything.",
            ),
        ),
        Topic(
            "Winter in a cabin outside {town}",
            (
                "We booked a wooden cabin in the forest outside {town} for a week in {month}, "
                "hoping for snow. We were not disappointed: it fell steadily on our second "
                "night and stayed for the rest of the trip.",
                "Days followed a happy routine of long walks, hot chocolate and reading by the "
                "wood burner. The owner left a sledge in the shed and a map of the best "
                "slopes nearby.",
                "The nearest shop is a twenty minute drive, so we stocked up on the way. The "
                "road was cleared every morning, but a car with winter tyres is a good idea.",
                "It was the most relaxing week we have had in years, and we have already "
                "asked about the same dates next winter.",
            ),
        ),
        Topic(
            "Cycling the canal towpath from {town} to {town2}",
            (
                "The towpath between {town} and {town2} is flat, traffic free and about "
                "{dozen} miles long, which makes it a perfect ride for a relaxed day out.",
                "We passed narrowboats painted in bright colours, a flight of {few} locks and "
                "a cafe in an old lock keeper's cottage that serves enormous slices of cake.",
                "The surface is mostly good gravel, though a few sections are muddy after rain. "
                "Watch out for walkers and anglers, and ring your bell before overtaking.",
                "We took the train home with the bikes, which was easy outside rush hour.",
            ),
        ),
    ),
    extras=(
        "Where we stayed: a family-run guesthouse near the centre with spotless rooms and a "
        "breakfast that kept us going until the evening. Rooms start at around {cur}{room} a "
        "night out of season.",
        "Packing tip: even in summer the weather here changes quickly, so bring a waterproof, "
        "a warm layer and shoes you do not mind getting wet.",
        "This post contains affiliate links. If you book through them we may earn a small "
        "commission at no extra cost to you.",
        "We will definitely be back. If you have been and have tips for next time, leave a "
        "comment below; I read every single one.",
        "Getting there: the nearest station is a short bus ride away, and the buses are timed "
        "to meet most trains. Parking in the centre is limited in high season.",
        "Budget note: we spent about {cur}{big_price} over the weekend, not counting travel, "
        "most of it on food, which felt about right.",
        "If you liked this post, you might also enjoy our guide to rainy day activities and "
        "our list of favourite coastal walks.",
        "A note on timing: we went just before the school holidays, which meant quiet paths "
        "and no queues. In August it is a different story, so book early if you must go then.",
        "Food highlights: fresh bread from the bakery by the bridge, a slice of cheesecake at "
        "the cafe on the square and the best chips we have had all year.",
        "Photography tip: the light is at its best in the hour after sunrise, when the streets "
        "are empty and the water is still.",
    ),
)

RECIPES = Genre(
    family="recipe",
    section="recipes",
    count=16,
    topics=(
        Topic(
            "Red lentil soup with lemon and cumin",
            (
                (
                    "This is the soup I make when the fridge is nearly empty and everyone is "
                    "hungry. It needs nothing fancy, it is ready in half an hour, and it tastes "
                    "even better the next day.",
                    "I started making this soup in my first flat, when money was tight and the "
                    "kitchen had one working ring. It has followed me through every move since, "
                    "and it still costs very little to make.",
                ),
                "Ingredients (serves 4): 250 g red lentils, 1 onion, 2 carrots, 2 cloves "
                "garlic, 1 tsp ground cumin, 1.2 litres vegetable stock, juice of 1 lemon, "
                "olive oil, salt and pepper.",
                "Method: Soften the chopped onion and carrots in a little oil for ten minutes. "
                "Add the garlic and cumin and cook for one more minute. Tip in the rinsed "
                "lentils and the stock, bring to the boil and simmer for twenty minutes until "
                "the lentils collapse. Blend until smooth, then stir in the lemon juice and "
                "season to taste.",
            ),
        ),
        Topic(
            "The lemon drizzle cake everyone asks me for",
            (
                (
                    "Every bake sale, every birthday, every time someone new moves into our road: "
                    "this is the cake that gets made. It is soft, sharp and sweet all at once.",
                    "If you only learn one cake, make it this one. It keeps well, travels well and "
                    "has never once failed me, even in an oven that runs hot.",
                ),
                "Ingredients: 225 g softened butter, 225 g caster sugar, 4 eggs, 225 g "
                "self-raising flour, zest of 2 lemons. For the drizzle: juice of 2 lemons and "
                "85 g granulated sugar.",
                "Method: Heat the oven to 180C. Beat the butter and sugar until pale, add the "
                "eggs one at a time, then fold in the flour and zest. Bake in a lined loaf tin "
                "for about 45 minutes. While the cake is still warm, prick it all over and pour "
                "over the lemon juice mixed with the sugar. Leave to cool in the tin.",
            ),
        ),
        Topic(
            "Weeknight chickpea and spinach curry",
            (
                (
                    "Some nights call for something warm and comforting without much effort. This "
                    "curry uses mostly store cupboard ingredients and comes together in one pan.",
                    "This is our Friday night curry, the one that happens when nobody can face a "
                    "takeaway menu. Swap the spinach for whatever greens you have.",
                ),
                "Ingredients (serves 4): 2 tins chickpeas, 1 tin chopped tomatoes, 1 tin "
                "coconut milk, 1 onion, 3 cloves garlic, a thumb of ginger, 2 tbsp curry "
                "paste, 200 g spinach, rice or flatbreads to serve.",
                "Method: Fry the onion until golden, then add the garlic, ginger and curry "
                "paste and cook for two minutes. Add the tomatoes, coconut milk and drained "
                "chickpeas and simmer for fifteen minutes. Stir in the spinach until it wilts "
                "and serve straight away.",
            ),
        ),
        Topic(
            "Sunday chicken and vegetable tray bake",
            (
                (
                    "A tray bake is my favourite kind of Sunday cooking: everything goes in one "
                    "tin, the oven does the work, and there is hardly any washing up.",
                    "When friends come over on a Sunday, this is what I make. I can chat while it "
                    "roasts and then bring the whole tin to the table.",
                ),
                "Ingredients (serves 4): 8 chicken thighs, 600 g small potatoes, 2 red onions, "
                "2 peppers, 1 bulb garlic, a few sprigs of rosemary, olive oil, salt.",
                "Method: Heat the oven to 200C. Halve the potatoes, cut the onions and peppers "
                "into wedges and toss everything with oil, salt and rosemary in a large tin. "
                "Nestle the chicken on top, skin side up, and roast for about 50 minutes until "
                "the skin is crisp and the potatoes are golden.",
            ),
        ),
        Topic(
            "Banana bread with walnuts",
            (
                (
                    "There are always a few bananas going brown in our fruit bowl, and this is "
                    "where they end up. The riper they are, the better the loaf.",
                    "I have tested a lot of banana bread recipes, and this is the one I keep "
                    "coming back to: moist, not too sweet, with crunchy walnuts on top.",
                ),
                "Ingredients: 3 very ripe bananas, 75 g melted butter, 150 g light brown sugar, "
                "1 egg, 1 tsp vanilla, 1 tsp bicarbonate of soda, a pinch of salt, 190 g plain "
                "flour, 60 g chopped walnuts.",
                "Method: Mash the bananas in a large bowl and stir in the butter, sugar, egg and "
                "vanilla. Add the bicarbonate, salt and flour and mix until just combined, then "
                "fold in the walnuts. Bake in a lined loaf tin at 175C for about an hour.",
            ),
        ),
        Topic(
            "Creamy mushroom risotto",
            (
                (
                    "Risotto has a reputation for being fussy, but it only asks for a little "
                    "patience. Put on some music, pour a glass of something and keep stirring.",
                    "Autumn means mushrooms, and mushrooms mean risotto. This version is rich but "
                    "not heavy, and it works with any mix of mushrooms you can find.",
                ),
                "Ingredients (serves 2): 150 g risotto rice, 250 g mixed mushrooms, 1 shallot, "
                "1 clove garlic, 700 ml hot stock, a small glass of white wine, 30 g butter, "
                "40 g grated hard cheese, parsley.",
                "Method: Fry the mushrooms until browned and set aside. Soften the shallot and "
                "garlic in butter, add the rice and stir for a minute, then add the wine. Add "
                "the stock a ladle at a time, stirring, for about eighteen minutes. Stir in the "
                "mushrooms, the rest of the butter and the cheese, and rest for two minutes.",
            ),
        ),
        Topic(
            "Summer tomato salad with crispy bread",
            (
                (
                    "This salad is only worth making when tomatoes are at their best, heavy and "
                    "sweet and still warm from the sun.",
                    "In August our kitchen counter is covered in tomatoes, and this salad is the "
                    "best way I know to use them up. The bread soaks up all the juices.",
                ),
                "Ingredients (serves 4): 800 g ripe tomatoes in mixed colours, half a loaf of "
                "day-old bread, 1 small red onion, a handful of basil, 4 tbsp olive oil, "
                "1 tbsp red wine vinegar, salt.",
                "Method: Tear the bread into chunks and toast in a pan with a little oil until "
                "crisp. Cut the tomatoes into wedges, salt them and leave for ten minutes. "
                "Toss with the sliced onion, bread, basil, oil and vinegar just before serving.",
            ),
        ),
        Topic(
            "Chewy oat and raisin cookies",
            (
                (
                    "These are the cookies my kids ask for after school, and they disappear about "
                    "as fast as I can bake them.",
                    "I bake a batch of these every Sunday so there is something in the tin for the "
                    "week. They rarely last until Wednesday.",
                ),
                "Ingredients (makes about 16): 125 g butter, 100 g brown sugar, 50 g caster "
                "sugar, 1 egg, 1 tsp cinnamon, 100 g plain flour, half a tsp baking powder, "
                "150 g rolled oats, 100 g raisins.",
                "Method: Cream the butter and sugars, beat in the egg, then stir in the flour, "
                "baking powder, cinnamon, oats and raisins. Roll into balls, flatten slightly on "
                "a lined tray and bake at 180C for 12 minutes. They will firm up as they cool.",
            ),
        ),
    ),
    extras=(
        "Jump to Recipe · Print Recipe",
        "My grandmother used to make a version of this in a kitchen no bigger than a "
        "cupboard, with the radio on and the window steamed up. I have changed a few things "
        "over the years, but the smell still takes me straight back.",
        "Storage: keeps for up to {few} days in an airtight container, and freezes well for "
        "up to three months.",
        "Rated {rating} out of 5 stars from {dozen} reviews.",
        "Tried this recipe? Leave a comment and a rating below, and tag us in your photos!",
        "Notes: the recipe doubles easily if you are feeding a crowd, and leftovers make a "
        "good lunch the next day.",
        "Prep time: {minutes} minutes. Cook time: {minutes2} minutes.",
        "Equipment: a large heavy pan, a sharp knife and a wooden spoon are all you need. No "
        "fancy gadgets required.",
        "Why this recipe works: a little patience at the start builds flavour that carries the "
        "whole dish, so resist the urge to turn the heat up.",
        "Serving suggestion: a green salad with a sharp dressing and some crusty bread on the "
        "side.",
    ),
)

REVIEWS = Genre(
    family="review",
    section="reviews",
    count=16,
    topics=(
        Topic(
            "Northvane D18 cordless drill review: solid, simple, a little heavy",
            (
                "The Northvane D18 is a mid-priced cordless drill aimed at people who do a bit "
                "of everything around the house. It arrives in a sturdy case with two "
                "batteries, a charger and a small set of bits.",
                "In use it feels robust. It drove long screws into timber without complaint "
                "and drilled cleanly through brick with a masonry bit. The clutch has "
                "{dozen} settings and the built-in light is genuinely useful in dark corners.",
                "The main drawback is weight: after an afternoon of putting up shelves, my "
                "wrist knew about it. The charger is also slow, taking over an hour to fill a "
                "battery.",
                "Verdict: a dependable tool that will last for years. Rating: {rating}/5.",
            ),
        ),
        Topic(
            "Tidelock Blend 600 review: a budget blender that punches above its price",
            (
                "At around {cur}{price}, the Tidelock Blend 600 is one of the cheapest "
                "blenders we have tested, and it does far more than we expected.",
                "Smoothies came out silky, even with frozen fruit, and it crushed ice in a "
                "few pulses. Soups were smooth too, though you have to let hot liquids cool "
                "a little because the jug is plastic.",
                "It is loud, and the lid clips feel flimsy. Cleaning is easy: a drop of "
                "washing up liquid, some warm water and ten seconds on the highest speed.",
                "Verdict: not the most refined machine, but excellent value. Rating: {rating}/5.",
            ),
        ),
        Topic(
            "Long-term review: Harlan Pike Ridge walking boots after {dozen} months",
            (
                "I bought the Ridge boots last spring and have worn them on almost every walk "
                "since, from muddy field paths to rocky mountain trails.",
                "They needed a couple of weeks to break in, but since then they have been "
                "comfortable all day. The waterproofing has held up well, although after a "
                "very wet day my socks were slightly damp at the toes.",
                "The soles show some wear but plenty of grip remains. The laces were the first "
                "thing to go, which is easily fixed.",
                "Would I buy them again? Yes, without hesitation. Rating: {rating}/5.",
            ),
        ),
        Topic(
            "Quillon Buds 2 review: good sound, so-so battery",
            (
                "The Quillon Buds 2 are compact wireless earbuds with a charging case that "
                "fits easily in a jeans pocket.",
                "Sound quality is warm and detailed for the price, with bass that is present "
                "but not overwhelming. Calls were clear indoors, less so on a windy street.",
                "Battery life is the weak point. We got about {few} hours of playback per "
                "charge, well short of the number on the box.",
                "Verdict: a pleasant everyday pair if you can live with topping them up. "
                "Rating: {rating}/5.",
            ),
        ),
        Topic(
            "We lived with the Velmar R3 robot vacuum for a month",
            (
                "Robot vacuums promise to take one chore off your list. The Velmar R3 mostly "
                "delivers, with a few frustrations along the way.",
                "It mapped our ground floor on its first run and now cleans each room in a "
                "sensible order. It handles hard floors and low rugs well, but it got stuck "
                "on the same doorway threshold {few} times in the first week.",
                "The app is simple and lets you mark areas to avoid, which solved the "
                "threshold problem. The bin is small and needs emptying after every run if "
                "you have a dog.",
                "Verdict: helpful rather than magical. Rating: {rating}/5.",
            ),
        ),
        Topic(
            "Brantwood Classic kettle review",
            (
                "A kettle should be the simplest appliance in the kitchen, and the Brantwood "
                "Classic mostly keeps it that way.",
                "It boils a full litre in just under three minutes and switches off reliably. "
                "The handle stays cool and the water window is easy to read from across the "
                "room.",
                "On the downside, the lid opens with quite a snap, and the finish shows "
                "fingerprints. It is also louder than some rivals as it comes to the boil.",
                "Verdict: does the job with a bit of style. Rating: {rating}/5.",
            ),
        ),
        Topic(
            "Inkleaf Pageturner e-reader review",
            (
                "The Inkleaf Pageturner is a six-inch e-reader with a front light and a "
                "water-resistant body, priced at {cur}{big_price}.",
                "The screen is crisp and comfortable in bright sunlight, and the warm light "
                "setting is pleasant for reading in bed. Page turns are quick.",
                "The store is smaller than some rivals, but the device opens common file "
                "formats, and loading your own books over a cable is straightforward.",
                "Verdict: a lovely reading device that gets out of the way. Rating: {rating}/5.",
            ),
        ),
        Topic(
            "Emberfield Trek camping stove review",
            (
                "The Emberfield Trek is a small gas stove that screws onto a standard "
                "canister and folds down to the size of a fist.",
                "On a calm evening it boiled half a litre of water in about four minutes. In "
                "wind it struggled, and we ended up building a windbreak out of our "
                "rucksacks.",
                "The piezo igniter worked every time during our {few} nights out, and the "
                "pot supports are wide enough for a small frying pan.",
                "Verdict: light, simple and reliable, but pack a windshield. Rating: {rating}/5.",
            ),
        ),
    ),
    extras=(
        "How we test: every product in our reviews is bought or borrowed and used for at "
        "least two weeks in real homes before we write a word.",
        "Price at time of writing: {cur}{big_price}. Prices change often, so check the retailer "
        "for the latest offers.",
        "We may earn a commission when you buy through links on this page.",
        "Pros: well built, easy to use, good value.\nCons: a few rough edges, average "
        "battery or power, limited colour options.",
        "Readers' comments\n{handle}: Had mine for two years now, still going strong.\n"
        "{handle2}: Mine broke after a month, but the warranty replacement has been fine.",
        "Also consider: if your budget stretches a little further, the model above adds a few "
        "extra features, though most people will not miss them.",
        "Who is it for? Anyone who wants something reliable without paying for features they "
        "will never use.",
        "Setting up took about ten minutes, most of it spent reading the surprisingly clear "
        "manual.",
        "Warranty: two years as standard, which is about average for this price range. "
        "Registering online adds another year.",
    ),
)

BIOS = Genre(
    family="bio",
    section="people",
    count=12,
    topics=(
        Topic(
            "{bio} ({old_year}–{old_year2}): the botanist of {town}",
            (
                "{bio} was born in {town} in {old_year}, the youngest of {few} children of a "
                "schoolmaster. From an early age {bio_sur} collected wild flowers along the "
                "banks of {river} and pressed them between the pages of old almanacs.",
                "After leaving school, {bio_sur} worked as an assistant at a nursery garden "
                "and spent every spare hour on field trips. The notebooks from those years "
                "record more than {hundreds} species found within a day's walk of the town.",
                "In later life {bio_sur} published a flora of the county, illustrated with "
                "careful drawings, and corresponded with collectors across the country.",
                "The herbarium of more than {thousands} specimens was left to the town museum, "
                "where part of it is still on display.",
            ),
        ),
        Topic(
            "{bio}, bridge builder",
            (
                "{bio} ({old_year}–{old_year2}) was a civil engineer best remembered for the "
                "iron bridge that still carries the road over {river} at {town}.",
                "Trained as a draughtsman in a shipyard, {bio_sur} moved into railway work "
                "and supervised the building of embankments, culverts and small viaducts.",
                "The bridge at {town}, completed after {few} years of work, was praised at "
                "the time for its light and elegant arches. A plaque on the east abutment "
                "records the names of the workers who built it.",
                "{bio_sur} retired to a cottage overlooking the river and spent the last "
                "years of life painting watercolours of the valley.",
            ),
        ),
        Topic(
            "Remembering {bio}, painter of the harbour",
            (
                "Few artists are as closely tied to one place as {bio}, who painted the "
                "harbour at {town} for more than forty years.",
                "Born in {old_year} to a family of net makers, {bio_sur} began by sketching "
                "boats on scraps of sailcloth. A local doctor noticed the drawings and paid "
                "for lessons at an art school in the city.",
                "The paintings are full of weather: squalls coming in over the breakwater, "
                "low winter sun on wet stone, boats crowded into shelter before a storm.",
                "A retrospective at {venue} in {year} brought together {dozen} works from "
                "private collections, many shown in public for the first time.",
            ),
        ),
        Topic(
            "{bio}: a life in music",
            (
                "{bio} was a composer and organist whose hymn tunes are still sung in "
                "churches around {town}.",
                "Born in {old_year}, {bio_sur} learned to play on a harmonium in the family "
                "parlour and became organist of the parish church at the age of nineteen.",
                "Over a long career {bio_sur} wrote more than {hundreds} pieces, including "
                "choral works for the town's festival and a set of piano pieces for children.",
                "A choir named in {bio_sur}'s honour was founded in {old_year2} and still "
                "rehearses every Tuesday evening.",
            ),
        ),
        Topic(
            "The teacher who built a school: {bio}",
            (
                "When {bio} arrived in {town} in {old_year}, the village had no school at all. "
                "Lessons were held in a barn, and many children never learned to read.",
                "{bio_sur} raised money door to door, persuaded a landowner to donate a plot "
                "on {street}, and watched the new schoolroom open {few} years later.",
                "Former pupils remembered strict but kind lessons, nature walks on Friday "
                "afternoons and a small lending library kept in a cupboard.",
                "The building is now the village hall, and a portrait of {bio_sur} hangs "
                "above the stage.",
            ),
        ),
        Topic(
            "{bio}, lifeboat coxswain",
            (
                "{bio} served with the {town} lifeboat for {dozen} years and led more than "
                "{hundreds} launches in all weathers.",
                "The most famous rescue came on a winter night in {old_year2}, when the crew "
                "rowed out through heavy seas to a cargo ship aground on the sandbanks and "
                "brought all of its crew ashore.",
                "Known in the town for a quiet manner and a dry sense of humour, {bio_sur} "
                "always insisted the credit belonged to the whole crew.",
                "A bench on the harbour wall carries {bio_sur}'s name and the words "
                "“steady hands, calm heart”.",
            ),
        ),
    ),
    extras=(
        "This profile is part of our series on the people who shaped the district. If you "
        "have letters, photographs or memories to share, please get in touch.",
        "Sources: parish records, newspaper reports of the time and the recollections of "
        "family members, collected by volunteers.",
        "A walking trail linking places associated with {bio_sur} starts at the museum and "
        "takes about an hour.",
        "Further reading: a short illustrated booklet is available from the museum shop.",
        "Edit history: this page was last revised by volunteers in {year}.",
        "Local tradition holds that {bio_sur} walked to work every day, whatever the weather, "
        "and greeted everyone on the way by name.",
        "Letters in the archive reveal a warm and witty correspondent, fond of gardening, long "
        "walks and arguments about the weather.",
        "A portrait of {bio_sur} painted in {old_year2} hangs in the reading room of the town "
        "library.",
    ),
)

EVENTS = Genre(
    family="event",
    section="events",
    count=14,
    topics=(
        Topic(
            "{town} Summer Festival returns to {venue}",
            (
                "The {town} Summer Festival returns this year with two days of live music, "
                "street food and family activities at {venue}.",
                "Headlining the main stage on Saturday evening is a twelve-piece folk "
                "orchestra, and the children's tent will host storytelling, face painting and "
                "a circus skills workshop.",
                "When: Saturday {day} and Sunday {day} {month}, {hour} am to {pm_hour} pm. "
                "Tickets: {cur}{price} for adults, children under twelve free.",
            ),
        ),
        Topic(
            "{town} Half Marathon: entries now open",
            (
                "Entries are now open for the {town} Half Marathon, which takes runners on a "
                "scenic route along {river} and through the old town.",
                "The course is mostly flat, with one short climb near the halfway mark, and "
                "there will be water stations every three miles. Last year more than "
                "{thousands} people took part.",
                "Race day: Sunday {day} {month}, start {hour}:30 am. Entry fee {cur}{price}. "
                "Places are limited and usually sell out.",
            ),
        ),
        Topic(
            "Book fair at {venue} this weekend",
            (
                "More than {dozen} booksellers will fill {venue} this weekend for the annual "
                "book fair, with everything from rare first editions to boxes of paperbacks "
                "at a pound each.",
                "Local authors will give readings throughout the day, and there is a "
                "children's corner with picture books and a reading den.",
                "Open {hour} am to 4 pm, Saturday and Sunday. Free entry.",
            ),
        ),
        Topic(
            "Open-air cinema comes to {town}",
            (
                "Bring a blanket and a picnic: the open-air cinema is coming to {venue} for "
                "{few} nights in {month}.",
                "The programme includes a family animation, a classic musical singalong and a "
                "late-night thriller. Deckchairs can be hired on the night.",
                "Gates open at {pm_hour} pm, films start at dusk. Tickets {cur}{price}, "
                "available online or at the gate if not sold out.",
            ),
        ),
        Topic(
            "Farmers market: every second Saturday in {town}",
            (
                "The {town} farmers market brings together producers from within thirty "
                "miles of the town, selling vegetables, meat, cheese, bread, honey and plants.",
                "This month look out for the first asparagus of the season, a new stall "
                "selling goat's cheese and a cookery demonstration at eleven.",
                "Where: {street}, {town}. When: second Saturday of every month, {hour} am "
                "to 1 pm. Free entry; dogs on leads welcome.",
            ),
        ),
        Topic(
            "Christmas craft fair at {venue}",
            (
                "Find handmade gifts at the Christmas craft fair at {venue}, with more than "
                "{dozen} stalls selling pottery, knitwear, jewellery, candles and woodwork.",
                "Mulled drinks and mince pies will be served by the scouts, and a brass band "
                "will play carols in the afternoon.",
                "Saturday {day} December, {hour} am to 4 pm. Entry {cur}1, children free. "
                "All proceeds from the entry fee go to the hospice.",
            ),
        ),
        Topic(
            "Spring concert: {town} Choral Society",
            (
                "The {town} Choral Society presents its spring concert, with a programme of "
                "choral music old and new, accompanied by a string quartet.",
                "The choir, which has {dozen} members, welcomes new singers of all abilities. "
                "Rehearsals are held on Tuesday evenings at {venue}.",
                "Concert: {weekday} {day} {month} at 7.30 pm. Tickets {cur}{price}, students "
                "half price, from the box office or on the door.",
            ),
        ),
    ),
    extras=(
        "Parking: limited parking on site; please use the park and ride from the edge of "
        "town if you can.",
        "Accessibility: the venue has step-free access and accessible toilets. Assistance "
        "dogs are welcome.",
        "Listing submitted by the organiser. Details may change; please check before you travel.",
        "Add to calendar | Get directions | Share event",
        "Volunteers wanted: if you can help for a few hours on the day, contact {person}.",
        "Similar events nearby: a vintage fair in {town2}, a duck race on {river} and a quiz "
        "night at {venue}.",
        "Food and drink: local traders will be selling hot food, cakes and drinks throughout "
        "the day, with vegetarian options available.",
        "Getting there: buses run every half hour from the station, and there is secure bike "
        "parking at the main entrance.",
        "Last year's event attracted more than {thousands} visitors, and organisers hope to beat "
        "that figure this time.",
    ),
)

HISTORY = Genre(
    family="history",
    section="history",
    count=12,
    topics=(
        Topic(
            "The {town} canal: a short history",
            (
                "Work on the canal that links {town} with {river} began in {old_year}, paid "
                "for by a group of mill owners who wanted a cheaper way to move coal and "
                "cloth than the rutted turnpike road.",
                "Gangs of labourers dug the channel by hand, and the flight of locks below "
                "the town took {few} years to finish. When the first boat arrived, church "
                "bells were rung and a dinner was held at the inn on {street}.",
                "Traffic peaked in the middle of the century. After the railway arrived, "
                "trade fell away, and by {old_year2} only a handful of boats still used it.",
                "Today the canal is restored for leisure boating, and the towpath is one of "
                "the most popular walks in the district.",
            ),
        ),
        Topic(
            "Water, wheels and wool: the story of {town}'s mills",
            (
                "There has been a mill on {river} at {town} since at least the fourteenth "
                "century, when a corn mill is recorded in a list of the manor's rents.",
                "In {old_year} the old corn mill was rebuilt as a woollen mill, with a great "
                "wheel driving carding machines and spinning frames on three floors. At its "
                "height it employed more than {hundreds} people, many of them children.",
                "The mill closed in {old_year2} after a long decline. For decades the "
                "building stood empty, its windows broken and its wheel rusting.",
                "It was converted into flats and workshops at the end of the last century, "
                "and the wheel has been restored to working order.",
            ),
        ),
        Topic(
            "The lost railway: the {town} branch line",
            (
                "The branch line to {town} opened in {old_year}, bringing the town within a "
                "few hours of the city for the first time.",
                "Trains carried milk, livestock and holidaymakers, and on summer Saturdays "
                "extra services were run for day trippers heading to the coast.",
                "Passenger numbers fell after the Second World War, and the line closed in "
                "the early 1960s. The tracks were lifted a few years later.",
                "Much of the old trackbed is now a footpath and cycle route, and the station "
                "building survives as a private house, its platform edge still visible in "
                "the garden.",
            ),
        ),
        Topic(
            "A light on the point: the {town} lighthouse",
            (
                "The lighthouse on the point at {town} was built in {old_year} after a run of "
                "shipwrecks on the rocks below the headland.",
                "The keepers lived with their families in cottages at the foot of the tower, "
                "growing vegetables in a walled garden and rowing to the town for supplies.",
                "The light was automated in the 1980s, and the last keepers left. The "
                "cottages are now let to holidaymakers.",
                "On open days visitors can climb the {dozen} steps of the spiral stair to the "
                "lantern room and look out across the bay.",
            ),
        ),
        Topic(
            "The great flood of {old_year} in {town}",
            (
                "After days of heavy rain in the autumn of {old_year}, {river} burst its banks "
                "and flooded the lower streets of {town} to a depth of several feet.",
                "Families moved to upper floors, and boats were rowed along {street} to carry "
                "bread and fresh water. The old packhorse bridge was swept away.",
                "When the water fell, the damage was severe: shops ruined, cellars full of "
                "mud and livestock lost from the riverside meadows.",
                "A mark on the wall of the church tower still shows the height the water "
                "reached, and a new stone bridge was built within a few years.",
            ),
        ),
        Topic(
            "The market charter and the making of {town}",
            (
                "{town} owes its shape to a market charter granted in the thirteenth century, "
                "which allowed a weekly market and an annual fair.",
                "The wide main street was laid out to hold the stalls, with long narrow plots "
                "behind the houses that can still be traced in the modern street plan.",
                "The fair, held every autumn, drew traders from across the region with cattle, "
                "cloth and cheese, and brought entertainers and travelling shows.",
                "The market still runs every week, although it now sells more plants and "
                "street food than cattle.",
            ),
        ),
        Topic(
            "The trams of {town}",
            (
                "Horse-drawn trams first ran in {town} in {old_year}, carrying workers from "
                "the terraces to the mills along {river}.",
                "The line was electrified a few years later, and at its peak the network had "
                "{few} routes and a depot on {street}.",
                "Buses replaced the trams in the 1930s, and most of the rails were pulled up "
                "or tarmacked over.",
                "A short length of track is still visible outside the old depot, which is now "
                "a climbing centre.",
            ),
        ),
    ),
    extras=(
        "This article draws on the society's archive of maps, photographs and oral "
        "histories. Members can view the originals by appointment.",
        "Can you help? We are looking for photographs of the area taken before {old_year2}. "
        "Please contact the archivist.",
        "The society's next talk, on the history of local inns, takes place at {venue} on "
        "{weekday} {day} {month}.",
        "Further reading: our illustrated guide to {town} is available from the shop, price "
        "{cur}{price}.",
        "A blue plaque marking the site was unveiled in {year} by the mayor of {town}.",
        "Old maps in the society's collection show how quickly the town grew in the nineteenth "
        "century, as fields along {street} were built over with terraces.",
        "Oral histories recorded in the 1970s describe the work as hard and the hours long, but "
        "also recall a strong sense of community.",
        "The society thanks the volunteers who transcribed the parish registers and made much "
        "of this research possible.",
    ),
)

FORUM_THREADS = [
    (
        "Slugs destroyed my lettuce seedlings overnight, what works?",
        "Planted out a whole row of lettuce on Saturday and by Monday morning there was "
        "nothing left but stalks. I don't want to use pellets because of the hedgehogs. "
        "What do you all do?",
        (
            "Beer traps work for me, a jam jar sunk into the soil with a bit of cheap beer. "
            "Empty it every couple of days, it's grim but effective.",
            "Grow the seedlings on a bit bigger in pots before planting out. Slugs love tiny "
            "tender leaves.",
            "Go out with a torch after dark and pick them off. Very satisfying.",
            "Copper tape round raised beds helped a bit, but honestly nothing is perfect.",
        ),
    ),
    (
        "Brought my old laptop back to life",
        "Found my ten year old laptop in the loft, swapped the hard drive for a cheap solid "
        "state drive and put a lightweight operating system on it. It boots in twenty seconds "
        "and is perfectly fine for browsing and writing. Feels good not to throw it away.",
        (
            "Nice one! Did you replace the thermal paste while you had it open?",
            "Same here, my kids use an old one for homework and it's fine.",
            "The battery on mine was dead so it lives plugged in, but it still works.",
            "How much did the drive cost you? Thinking of doing the same.",
        ),
    ),
    (
        "Anyone else's train late every single day this week?",
        "The 7.42 has been late every day since Monday. Today it was cancelled and the next "
        "one was so packed I had to stand all the way. Is there something going on with the "
        "line?",
        (
            "Engineering works near the junction apparently, supposed to finish next month.",
            "I've given up and started getting the earlier one. Coffee helps.",
            "Claim delay repay! It adds up over a month.",
            "Standing room only here too. Not what we pay for.",
        ),
    ),
    (
        "Book club pick for next month?",
        "Our group has just finished a very long historical novel and everyone wants "
        "something lighter next. Ideally under 300 pages, funny, and good for discussion. "
        "Any suggestions?",
        (
            "A comic novel about a family reunion that goes wrong always goes down well.",
            "We did a collection of short stories last year, easy to read a few each week.",
            "Something set somewhere warm! We did a Mediterranean one in January and it was a "
            "treat.",
            "Please report back what you pick, always looking for ideas.",
        ),
    ),
    (
        "Which birds are visiting your feeders this winter?",
        "We've had a pair of bullfinches on the seed feeder for the first time ever, plus the "
        "usual blue tits, a robin and far too many pigeons. What's turning up in your garden?",
        (
            "A great spotted woodpecker on the fat balls every morning, very exciting.",
            "Long-tailed tits, always in a gang of about ten.",
            "Just sparrows and starlings here, but lots of them.",
            "Jealous of the bullfinches! Never seen one in our garden.",
        ),
    ),
    (
        "Neighbour's dog barks all day while they're at work",
        "I work from home and the dog next door barks pretty much from nine till five. I "
        "don't want to fall out with them. How would you bring it up?",
        (
            "Just mention it casually, they probably have no idea it happens when they're out.",
            "Maybe offer to take it for a walk at lunchtime? Made a friend that way once.",
            "Noise cancelling headphones saved my sanity in a similar situation.",
            "Write a friendly note if talking feels awkward.",
        ),
    ),
    (
        "First sourdough loaf, pretty proud of it",
        "After two weeks of feeding the starter I finally baked a loaf. It's a bit flat and "
        "the crust is very dark, but the inside has proper holes and it tastes amazing.",
        (
            "Looks great for a first go! Try a slightly cooler oven for the second half.",
            "Mine were frisbees for a month, you're doing well.",
            "What flour are you using? I found a stronger one helped with the rise.",
            "The dark crust is the best bit, don't change a thing.",
        ),
    ),
]
FORUM_GENERIC_REPLIES = [
    "+1, same here.",
    "Following this thread.",
    "Welcome to the forum! Good first post.",
    "Mods, can this be moved to the right section?",
    "Ha, my partner says exactly the same thing.",
    "Any update on this?",
    "Thanks everyone, really helpful replies.",
    "Great question, I've wondered about this too.",
    "Bumping this because I'd also like to know.",
    "This is why I love this forum.",
    "Off topic, but does anyone know when the next meetup is?",
]


def narrative_doc(rng: random.Random, genre: Genre, topic: Topic) -> tuple[str, str]:
    """One narrative page: some of the topic's paragraphs, a few extras, chrome around it."""
    values = slots(rng)
    bio_sur = rng.choice(SURNAMES)
    values |= {"bio": f"{rng.choice(FIRST_NAMES)} {bio_sur}", "bio_sur": bio_sur}
    title = fill(topic.title, values)
    paras = list(topic.paragraphs)
    long_read = rng.random() < 0.15
    keep = len(paras) if long_read else rng.randint(max(2, len(paras) - 1), len(paras))
    # Keep the order of the kept paragraphs: a story read in order still reads as one.
    dropped = rng.sample(range(1, len(paras)), len(paras) - keep) if keep < len(paras) else []
    servings = rng.choice([2, 4, 6, 8])
    body = [
        scale_recipe(fill(wording(rng, p), values), servings)
        for i, p in enumerate(paras)
        if i not in dropped
    ]
    n_extra = len(genre.extras) - 2 if long_read else rng.choice([2, 3, 3, 4, 4, 5, 6, 7])
    for extra in rng.sample(genre.extras, min(n_extra, len(genre.extras))):
        # Mostly after the story, sometimes dropped in between paragraphs like a sidebar.
        at = len(body) if rng.random() < 0.7 else rng.randint(1, len(body))
        body.insert(at, fill(extra, values))
    if long_read or rng.random() < 0.55:
        k = rng.randint(4, 7) if long_read else rng.randint(2, 4)
        pool = READER_COMMENTS[COMMENT_POOL.get(genre.family, "lifestyle")]
        body.append(comment_block(rng, pool, k))
    site = make_site(rng, genre.family)
    text = page(rng, site, genre.family, title, body, chrome=rng.choice([0.3, 0.6, 0.9]))
    return text, url_for(rng, site, title, genre.section)


def forum_doc(rng: random.Random, thread: tuple[str, str, tuple[str, ...]]) -> tuple[str, str]:
    """A forum thread: opening post, a handful of on-topic and throwaway replies."""
    title, opening, own = thread
    values = slots(rng)
    site = make_site(rng, "forum")
    replies = rng.sample(own, rng.randint(3, len(own)))
    replies += rng.sample(FORUM_GENERIC_REPLIES, rng.randint(2, 4))
    rng.shuffle(replies)
    posts = [f"{values['handle']} wrote on {date_str(rng)}:\n{opening}"]
    for reply in replies:
        who = rng.choice(HANDLES)
        likes = rng.randint(0, 14)
        posts.append(
            f"{who} replied:\n{reply}\nReply · Quote · {likes} like{'' if likes == 1 else 's'}"
        )
    header = f"Forums › {rng.choice(['General Chat', 'Home & Garden', 'Off Topic', 'Help'])}"
    body = [header, *posts, f"Page 1 of {rng.randint(1, 4)}  ·  {len(posts)} posts"]
    text = page(rng, site, "forum", title, body, chrome=rng.choice([0.4, 0.8]), with_byline=False)
    url = f"https://{site.domain}/threads/{slug(title)}.{rng.randint(1000, 99999)}/"
    return text, url


ROUNDUP_TITLES = {
    "news": ["The week in {town}", "{town} news roundup", "What happened in {town} this week"],
    "history": ["{town} through the ages", "A short history of {town}", "Old {town}: a reader"],
}


def roundup_doc(rng: random.Random, genre: Genre) -> tuple[str, str]:
    """A long page that strings several stories about one town together, as weekly digests
    and local-history readers do; the long tail of the length distribution comes from here."""
    base = slots(rng)
    title = fill(rng.choice(ROUNDUP_TITLES[genre.family]), base)
    body: list[str] = [fill(rng.choice(genre.extras), base)]
    for topic in rng.sample(genre.topics, 4):
        values = slots(rng) | {"town": base["town"]}
        bio_sur = rng.choice(SURNAMES)
        values |= {"bio": f"{rng.choice(FIRST_NAMES)} {bio_sur}", "bio_sur": bio_sur}
        body.append(fill(topic.title, values))
        body.extend(fill(wording(rng, p), values) for p in topic.paragraphs)
    body.append(comment_block(rng, READER_COMMENTS["community"], rng.randint(2, 5)))
    site = make_site(rng, genre.family)
    text = page(rng, site, genre.family, title, body, chrome=0.6)
    return text, url_for(rng, site, title, genre.section)


def narrative_docs(rng: random.Random) -> list[tuple[str, str]]:
    """Every genre's count of pages, topics in turn; two roundups each for news and history."""
    genres = [NEWS, TRAVEL, RECIPES, REVIEWS, BIOS, EVENTS, HISTORY]
    out = []
    for genre in genres:
        roundups = 2 if genre.family in ROUNDUP_TITLES else 0
        for i in range(genre.count - roundups):
            out.append(narrative_doc(rng, genre, genre.topics[i % len(genre.topics)]))
        out.extend(roundup_doc(rng, genre) for _ in range(roundups))
    n_forum = COUNTS["narrative"] - len(out)
    for i in range(n_forum):
        out.append(forum_doc(rng, FORUM_THREADS[i % len(FORUM_THREADS)]))
    return out


# ---------------------------------------------------------------------------------------------
# Reasoning-rich English: worked problems whose numbers come from the RNG and whose answers are
# computed here, plus proofs, derivations and structured arguments.
# ---------------------------------------------------------------------------------------------


@dataclass
class Problem:
    """A worked problem: what to ask, the steps that solve it, and the final answer if any."""

    subject: str
    title: str
    question: str
    steps: list[str]
    answer: str | None


def kinematics_from_rest(rng: random.Random) -> Problem:
    thing, lo, hi = rng.choice(
        [
            ("a car pulling away from a traffic light", 1.5, 4.0),
            ("a cyclist starting a sprint", 0.8, 2.0),
            ("a commuter train leaving a station", 0.5, 1.2),
            ("an electric scooter", 1.0, 2.5),
            ("a sprinter leaving the blocks", 2.5, 4.5),
        ]
    )
    a, t = round(rng.uniform(lo, hi), 1), rng.randint(4, 12)
    v, d = a * t, 0.5 * a * t * t
    return Problem(
        "Physics",
        f"Uniform acceleration from rest: {thing}",
        f"{cap(thing)} starts from rest and accelerates uniformly at {num(a)} m/s² for {t} s. "
        "What is the final speed, and what distance is covered in that time?",
        [
            "The object starts from rest, so the initial velocity u is zero, and the "
            "acceleration is constant, which means the equations of uniformly accelerated "
            "motion apply.",
            f"For the final speed we use v = u + at = 0 + {num(a)} × {t} = {num(v)} m/s. "
            f"Multiplying by 3.6 converts this to about {num(v * 3.6, 1)} km/h.",
            f"For the distance we use s = ut + ½at². The first term is zero, so s = 0.5 × "
            f"{num(a)} × {t}² = 0.5 × {num(a)} × {t * t} = {num(d)} m.",
            f"As a check, the average speed over the interval is half the final speed, "
            f"{num(v / 2)} m/s, and multiplying it by the {t} seconds gives {num(d)} m again.",
        ],
        f"It reaches {num(v)} m/s and covers {num(d)} m.",
    )


def stopping_distance(rng: random.Random) -> Problem:
    kmh = rng.choice([30, 40, 50, 60, 70, 80, 90, 100, 110])
    tr = rng.choice([0.7, 0.8, 1.0, 1.2, 1.5])
    b = rng.choice([5.0, 6.0, 6.5, 7.0, 7.5, 8.0])
    v = kmh / 3.6
    react, brake = v * tr, v * v / (2 * b)
    return Problem(
        "Physics",
        f"How far does a car travel before it stops at {kmh} km/h?",
        f"A driver is travelling at {kmh} km/h when a child runs into the road. The driver's "
        f"reaction time is {num(tr)} s, and once the brakes are applied the car decelerates "
        f"at {num(b)} m/s². What is the total stopping distance?",
        [
            "The stopping distance has two parts: the thinking distance, covered at constant "
            "speed before the brakes come on, and the braking distance, covered while "
            "slowing down.",
            f"First convert the speed to metres per second: {kmh} ÷ 3.6 = {num(v)} m/s.",
            f"Thinking distance = speed × reaction time = {num(v)} × {num(tr)} = {num(react)} m.",
            f"For the braking distance, use v² = u² − 2as with a final speed of zero, which "
            f"gives s = u² ÷ (2a) = {num(v)}² ÷ (2 × {num(b)}) = {num(brake)} m.",
            f"Adding the two parts gives {num(react)} + {num(brake)} = {num(react + brake)} m. "
            "Notice that the braking part grows with the square of the speed, so doubling "
            "the speed would make it four times as long.",
        ],
        f"The total stopping distance is about {num(react + brake, 1)} m.",
    )


def vertical_throw(rng: random.Random) -> Problem:
    v0, g = rng.randint(8, 24), rng.choice([9.8, 9.81])
    t_up, h = v0 / g, v0 * v0 / (2 * g)
    return Problem(
        "Physics",
        "How high does a ball thrown straight up go?",
        f"A ball is thrown straight up with a speed of {v0} m/s. Ignoring air resistance and "
        f"taking g = {g} m/s², how high does it rise, and how long is it in the air before "
        "it returns to the thrower's hand?",
        [
            "At the highest point the ball is momentarily at rest, so its vertical velocity "
            "there is zero. The only acceleration is gravity, pointing down.",
            f"Time to the top: v = u − gt with v = 0 gives t = u ÷ g = {v0} ÷ {g} = "
            f"{num(t_up, 3)} s.",
            f"Maximum height: v² = u² − 2gh with v = 0 gives h = u² ÷ (2g) = {v0 * v0} ÷ "
            f"{num(2 * g)} = {num(h)} m.",
            f"Without air resistance the motion is symmetric, so the fall takes as long as the "
            f"rise and the total time is 2 × {num(t_up, 3)} = {num(2 * t_up, 2)} s. The ball "
            f"also returns at {v0} m/s.",
        ],
        f"It rises {num(h)} m and is in the air for {num(2 * t_up, 2)} s.",
    )


def compound_interest(rng: random.Random) -> Problem:
    p = rng.randrange(1000, 20001, 500)
    r = rng.choice([2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 7.0])
    t = rng.randint(3, 15)
    annual = p * (1 + r / 100) ** t
    monthly = p * (1 + r / 1200) ** (12 * t)
    simple = p * (1 + r * t / 100)
    double = math.log(2) / math.log(1 + r / 100)
    return Problem(
        "Finance",
        f"Compound interest: what does {num(p, 0)} become after {t} years at {num(r)}%?",
        f"You deposit {num(p, 0)} in a savings account paying {num(r)}% interest per year and "
        f"leave it untouched for {t} years. How much is in the account at the end if interest "
        "is compounded annually? How does that compare with monthly compounding and with "
        "simple interest?",
        [
            f"With annual compounding the balance is multiplied by 1 + {num(r / 100, 3)} = "
            f"{num(1 + r / 100, 3)} each year, so after {t} years it is {num(p, 0)} × "
            f"{num(1 + r / 100, 3)}^{t} = {num(annual)}.",
            f"With monthly compounding the monthly rate is {num(r)} ÷ 12 = "
            f"{num(r / 12, 4)}%, applied {12 * t} times: {num(p, 0)} × (1 + "
            f"{num(r / 1200, 6)})^{12 * t} = {num(monthly)}. That is {num(monthly - annual)} "
            "more, because interest starts earning interest sooner.",
            f"Simple interest pays {num(r)}% of the original deposit each year and nothing on "
            f"past interest: {num(p, 0)} × (1 + {num(r / 100, 3)} × {t}) = {num(simple)}.",
            f"As a side note, the rule of 72 estimates the doubling time as 72 ÷ {num(r)} = "
            f"{num(72 / r, 1)} years; the exact value, ln 2 ÷ ln({num(1 + r / 100, 3)}), is "
            f"{num(double, 1)} years.",
        ],
        f"About {num(annual)} with annual compounding.",
    )


def dice_sum(rng: random.Random) -> Problem:
    s = rng.choice([3, 4, 5, 6, 8, 9, 10, 11])
    pairs = [(a, s - a) for a in range(1, 7) if 1 <= s - a <= 6]
    at_least = sum(6 - abs(k - 7) for k in range(s, 13))
    p_eq, p_ge = Fraction(len(pairs), 36), Fraction(at_least, 36)
    listed = ", ".join(f"({a}, {b})" for a, b in pairs)
    return Problem(
        "Probability",
        f"Probability that two dice add up to {s}",
        f"Two fair six-sided dice are rolled. What is the probability that the total is "
        f"exactly {s}? What is the probability that the total is at least {s}?",
        [
            "Treat the dice as distinguishable, say one red and one blue. Then there are "
            "6 × 6 = 36 equally likely ordered outcomes.",
            f"The outcomes that sum to {s} are {listed}, which is {len(pairs)} outcomes. So "
            f"P(total = {s}) = {len(pairs)}/36 = {frac(p_eq)}.",
            f"For 'at least {s}' we add the counts for every total from {s} to 12. The number "
            f"of ways to make a total k is 6 − |k − 7|, and adding these gives {at_least}.",
            f"So P(total ≥ {s}) = {at_least}/36 = {frac(p_ge)}, roughly "
            f"{num(float(p_ge) * 100, 1)}%.",
        ],
        f"P(total = {s}) = {frac(p_eq)} and P(total ≥ {s}) = {frac(p_ge)}.",
    )


def card_draws(rng: random.Random) -> Problem:
    k = rng.randint(2, 4)
    if rng.random() < 0.5:
        p = Fraction(math.comb(13, k), math.comb(52, k))
        factors = " × ".join(f"{13 - i}/{52 - i}" for i in range(k))
        return Problem(
            "Probability",
            f"Drawing {k} hearts in a row",
            f"You draw {k} cards from a well-shuffled standard deck of 52 without replacement. "
            "What is the probability that all of them are hearts?",
            [
                "There are 13 hearts in the deck. Drawing without replacement means both the "
                "number of hearts left and the size of the deck go down by one after each draw.",
                f"Multiply the conditional probabilities: {factors}.",
                f"Equivalently, count hands: C(13, {k}) ÷ C(52, {k}) = {math.comb(13, k)} ÷ "
                f"{math.comb(52, k)}, which simplifies to {frac(p)}.",
                f"That is about {num(float(p) * 100, 2)}%, much smaller than the 1/4 for a "
                "single card.",
            ],
            f"The probability is {frac(p)}.",
        )
    none = Fraction(math.comb(48, k), math.comb(52, k))
    return Problem(
        "Probability",
        f"At least one ace in {k} cards",
        f"A hand of {k} cards is dealt from a standard 52-card deck. What is the probability "
        "that it contains at least one ace?",
        [
            "It is easier to compute the complement: the probability that the hand has no "
            "ace at all, then subtract from one.",
            f"There are 48 non-aces. The number of ace-free hands is C(48, {k}) = "
            f"{math.comb(48, k)}, out of C(52, {k}) = {math.comb(52, k)} hands in total.",
            f"So P(no ace) = {frac(none)}, and P(at least one ace) = 1 − {frac(none)} = "
            f"{frac(1 - none)}.",
            f"As a decimal, that is about {num(float(1 - none), 4)}.",
        ],
        f"P(at least one ace) = {frac(1 - none)} ≈ {num(float(1 - none), 4)}.",
    )


def ticket_equations(rng: random.Random) -> Problem:
    event, kind_a, kind_b = rng.choice(
        [
            ("the school play", "adult", "child"),
            ("a museum open day", "adult", "student"),
            ("a charity concert", "standard", "concession"),
            ("the village pantomime", "adult", "child"),
            ("a football friendly", "seated", "standing"),
        ]
    )
    pa = rng.randint(8, 25)
    pb = rng.randint(3, pa - 2)
    a, b = rng.randint(40, 300), rng.randint(20, 250)
    n, total = a + b, pa * a + pb * b
    return Problem(
        "Algebra",
        f"How many {kind_a} tickets were sold? A system of two equations",
        f"{cap(event)} sold {n} tickets in total and took {total} in ticket money. "
        f"{cap(kind_a)} tickets cost {pa} each and {kind_b} tickets cost {pb} each. How many "
        "of each kind were sold?",
        [
            f"Let x be the number of {kind_a} tickets and y the number of {kind_b} tickets. "
            f"Counting tickets gives x + y = {n}, and counting money gives {pa}x + {pb}y = "
            f"{total}.",
            f"Multiply the first equation by {pb}: {pb}x + {pb}y = {pb * n}. Subtracting it "
            f"from the second equation eliminates y: {pa - pb}x = {total} − {pb * n} = "
            f"{total - pb * n}.",
            f"So x = {total - pb * n} ÷ {pa - pb} = {a}, and then y = {n} − {a} = {b}.",
            f"Check: {pa} × {a} + {pb} × {b} = {pa * a} + {pb * b} = {total}, as required.",
        ],
        f"{a} {kind_a} tickets and {b} {kind_b} tickets.",
    )


def garden_area(rng: random.Random) -> Problem:
    length, width = rng.randint(8, 30), rng.choice([4, 6, 8, 10, 12, 14])
    semi = math.pi * width * width / 8
    area = length * width + semi
    fence = 2 * length + width + math.pi * width / 2
    return Problem(
        "Geometry",
        "Area and perimeter of a lawn with a rounded end",
        f"A lawn is shaped like a rectangle {length} m long and {width} m wide, with a "
        f"semicircle attached to one of the {width} m ends. What is its area, and how much "
        "edging is needed to go all the way around it?",
        [
            f"Split the shape into the rectangle and the semicircle. The rectangle has area "
            f"{length} × {width} = {length * width} m².",
            f"The semicircle has diameter {width} m, so radius {num(width / 2)} m, and its "
            f"area is half of πr²: 0.5 × π × {num(width / 2)}² = {num(semi)} m².",
            f"Total area = {length * width} + {num(semi)} = {num(area)} m².",
            f"For the edging, the boundary is the two long sides, the straight short side, and "
            f"the curved arc, which is half a circumference: π × {width} ÷ 2 = "
            f"{num(math.pi * width / 2)} m. So the length is 2 × {length} + {width} + "
            f"{num(math.pi * width / 2)} = {num(fence)} m.",
        ],
        f"Area ≈ {num(area, 1)} m²; edging ≈ {num(fence, 1)} m.",
    )


def heron_triangle(rng: random.Random) -> Problem:
    while True:
        a, b, c = sorted(rng.sample(range(5, 26), 3))
        if a + b > c + 2:
            break
    s = (a + b + c) / 2
    area = math.sqrt(s * (s - a) * (s - b) * (s - c))
    return Problem(
        "Geometry",
        f"Area of a triangle with sides {a}, {b} and {c}",
        f"A triangular plot of land has sides of {a} m, {b} m and {c} m. Find its area.",
        [
            "We know all three sides but no angle or height, which is exactly the situation "
            "Heron's formula is made for: area = √(s(s − a)(s − b)(s − c)), where s is half "
            "the perimeter.",
            f"First check that the triangle exists: the two shorter sides add to {a + b}, "
            f"which is more than {c}.",
            f"The semi-perimeter is s = ({a} + {b} + {c}) ÷ 2 = {num(s)}.",
            f"Then s − a = {num(s - a)}, s − b = {num(s - b)}, s − c = {num(s - c)}, and the "
            f"product s(s − a)(s − b)(s − c) = {num(s * (s - a) * (s - b) * (s - c), 4)}.",
            f"Taking the square root gives an area of {num(area)} m².",
        ],
        f"The area is about {num(area, 1)} m².",
    )


def ladder(rng: random.Random) -> Problem:
    length = rng.choice([5, 6, 6.5, 7, 8, 10])
    foot = round(rng.uniform(0.2, 0.35) * length, 1)
    slide = rng.choice([0.5, 1.0])
    h1 = math.sqrt(length**2 - foot**2)
    h2 = math.sqrt(length**2 - (foot + slide) ** 2)
    angle = math.degrees(math.acos(foot / length))
    return Problem(
        "Geometry",
        "The sliding ladder problem",
        f"A {num(length)} m ladder leans against a vertical wall with its foot {num(foot)} m "
        f"from the wall. How high up the wall does it reach? If the foot then slips "
        f"{num(slide)} m further out, how far does the top slide down?",
        [
            "The wall, the ground and the ladder form a right-angled triangle with the ladder "
            "as the hypotenuse, so Pythagoras' theorem applies.",
            f"Height = √({num(length)}² − {num(foot)}²) = √({num(length**2)} − "
            f"{num(foot**2)}) = {num(h1)} m. The ladder makes an angle of about "
            f"{num(angle, 1)}° with the ground.",
            f"After slipping, the foot is {num(foot + slide)} m out, so the new height is "
            f"√({num(length**2)} − {num((foot + slide) ** 2)}) = {num(h2)} m.",
            f"The top therefore slides down {num(h1)} − {num(h2)} = {num(h1 - h2)} m. It "
            "drops less than the foot moves out here, but the drop grows as the ladder "
            "gets flatter.",
        ],
        f"It first reaches {num(h1)} m; the top slides down {num(h1 - h2)} m.",
    )


def running_pace(rng: random.Random) -> Problem:
    dist = rng.choice([5, 8, 10, 15, 21.1])
    pace_s = rng.randint(240, 420)
    total = round(dist * pace_s)
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    shown = f"{h} h {m} min {s} s" if h else f"{m} min {s} s"
    pace = total / dist
    pm, ps = divmod(round(pace), 60)
    kmh = dist / (total / 3600)
    return Problem(
        "Measurement",
        f"Converting a {num(dist)} km race time into pace and speed",
        f"A runner finishes a {num(dist)} km race in {shown}. What was her average pace in "
        "minutes per kilometre, and her average speed in km/h and in m/s?",
        [
            f"Work in seconds first: the finishing time is {total} s.",
            f"Pace is time per distance: {total} ÷ {num(dist)} = {num(pace, 1)} s per km, "
            f"which is {pm} min {ps:02d} s per km.",
            f"Speed is distance per time. In hours the time is {total} ÷ 3600 = "
            f"{num(total / 3600, 4)} h, so the speed is {num(dist)} ÷ {num(total / 3600, 4)} "
            f"= {num(kmh)} km/h.",
            f"To convert km/h to m/s divide by 3.6 (1000 m per km over 3600 s per hour): "
            f"{num(kmh)} ÷ 3.6 = {num(kmh / 3.6)} m/s.",
        ],
        f"Pace {pm}:{ps:02d} per km; speed {num(kmh)} km/h = {num(kmh / 3.6)} m/s.",
    )


def supply_demand(rng: random.Random) -> Problem:
    b, d = rng.randint(2, 8), rng.randint(2, 8)
    p_star, q_star = rng.randint(4, 30), rng.randint(60, 400)
    a, c = q_star + b * p_star, q_star - d * p_star
    k = rng.randint(1, 3)
    supply = f"{c} + {d}P" if c >= 0 else f"{d}P − {-c}"
    return Problem(
        "Economics",
        "Finding market equilibrium from supply and demand",
        f"In a local market for fresh bread, demand is Qd = {a} − {b}P and supply is "
        f"Qs = {supply}, where P is the price and Q is loaves per day. Find the equilibrium "
        f"price and quantity. What happens if a price ceiling is set {k} below equilibrium?",
        [
            "At equilibrium the quantity demanded equals the quantity supplied, so set the "
            "two expressions equal.",
            f"{a} − {b}P = {supply}. Collecting terms gives {a - c} = {b + d}P, so "
            f"P = {a - c} ÷ {b + d} = {p_star}.",
            f"Substituting back: Qd = {a} − {b} × {p_star} = {q_star}, and Qs gives the same "
            f"{q_star}, which confirms the result.",
            f"With a ceiling at P = {p_star - k}, demand rises to {a - b * (p_star - k)} while "
            f"supply falls to {c + d * (p_star - k)}. The difference, a shortage of "
            f"{(b + d) * k} loaves per day, is (b + d) times the gap between the prices.",
        ],
        f"Equilibrium price {p_star}, quantity {q_star}; the ceiling causes a shortage of "
        f"{(b + d) * k}.",
    )


def dice_game_value(rng: random.Random) -> Problem:
    cost, w6, w5 = rng.randint(1, 5), rng.randint(5, 15), rng.randint(1, 5)
    ev = Fraction(w6 + w5, 6) - cost
    verdict = "favours the player" if ev > 0 else "favours the stall" if ev < 0 else "is fair"
    return Problem(
        "Probability",
        "Is the dice game at the fair worth playing?",
        f"At a fair, a game costs {cost} tokens to play. You roll one die: a six wins {w6} "
        f"tokens, a five wins {w5} tokens, and anything else wins nothing. What is the "
        "expected gain per game, and should you play?",
        [
            "The expected value is the sum of each outcome's payoff times its probability. "
            "Each face of a fair die has probability 1/6.",
            f"Expected winnings = {w6} × 1/6 + {w5} × 1/6 + 0 × 4/6 = {w6 + w5}/6 = "
            f"{num((w6 + w5) / 6, 3)} tokens.",
            f"Subtract the cost of playing: {num((w6 + w5) / 6, 3)} − {cost} = "
            f"{num(float(ev), 3)} tokens per game.",
            f"Over 600 games you would expect a net change of about {num(float(ev) * 600, 0)} "
            f"tokens, so the game {verdict}. Any single game is of course a gamble.",
        ],
        f"Expected gain {frac(ev)} tokens per game ({num(float(ev), 3)}).",
    )


def bayes_test(rng: random.Random) -> Problem:
    n = rng.choice([50, 100, 200, 250, 500, 1000])
    sens, spec = rng.randint(90, 99), rng.randint(90, 99)
    pop = 100 * n
    tp, fp = sens, (100 - spec) * (n - 1)
    ppv = tp / (tp + fp)
    return Problem(
        "Statistics",
        "Bayes' rule: what does a positive test really mean?",
        f"A condition affects 1 in {n} people. A screening test detects it in {sens}% of "
        f"people who have it (sensitivity) and correctly gives a negative result for {spec}% "
        "of people who do not (specificity). If a randomly chosen person tests positive, "
        "what is the probability that they actually have the condition?",
        [
            f"Natural frequencies make this easier. Imagine {num(pop, 0)} people. Of them, "
            f"{num(pop, 0)} ÷ {n} = 100 have the condition and {num(pop - 100, 0)} do not.",
            f"Of the 100 with the condition, {sens}% test positive: {tp} true positives.",
            f"Of the {num(pop - 100, 0)} without it, {100 - spec}% test positive anyway: "
            f"{num(fp, 0)} false positives.",
            f"So {num(tp + fp, 0)} people test positive, and only {tp} of them have the "
            f"condition. By Bayes' rule, P(condition | positive) = {tp} ÷ {num(tp + fp, 0)} "
            f"= {num(ppv, 4)}.",
            "The test is accurate, but the condition is rare, so false positives from the "
            "large healthy group can outnumber the true positives.",
        ],
        f"About {num(ppv * 100, 1)}%.",
    )


def committee(rng: random.Random) -> Problem:
    women, men, k = rng.randint(4, 9), rng.randint(4, 9), rng.randint(3, 5)
    total, no_women = math.comb(women + men, k), math.comb(men, k)
    exactly2 = math.comb(women, 2) * math.comb(men, k - 2)
    return Problem(
        "Combinatorics",
        f"Choosing a committee of {k}",
        f"A club has {women} women and {men} men. In how many ways can a committee of {k} be "
        "chosen if it must include at least one woman? How many committees have exactly two "
        "women?",
        [
            "The order of selection does not matter, so we count combinations.",
            f"Without any restriction there are C({women + men}, {k}) = {total} committees.",
            f"The committees with no women are chosen entirely from the {men} men: "
            f"C({men}, {k}) = {no_women}.",
            f"Subtracting, the committees with at least one woman number {total} − "
            f"{no_women} = {total - no_women}.",
            f"For exactly two women, choose the women and the men separately and multiply: "
            f"C({women}, 2) × C({men}, {k - 2}) = {math.comb(women, 2)} × "
            f"{math.comb(men, k - 2)} = {exactly2}.",
        ],
        f"{total - no_women} committees with at least one woman; {exactly2} with exactly two.",
    )


def word_arrangements(rng: random.Random) -> Problem:
    word = rng.choice(
        ["BANANA", "LETTER", "COFFEE", "PEPPER", "BALLOON", "STATISTICS", "COMMITTEE", "ADDRESS"]
    )
    counts: dict[str, int] = {}
    for ch in word:
        counts[ch] = counts.get(ch, 0) + 1
    repeats = {ch: c for ch, c in counts.items() if c > 1}
    denom = math.prod(math.factorial(c) for c in repeats.values())
    result = math.factorial(len(word)) // denom
    listed = ", ".join(f"{ch} appears {c} times" for ch, c in repeats.items())
    return Problem(
        "Combinatorics",
        f"How many ways can you arrange the letters of {word}?",
        f"How many distinct arrangements are there of the letters in the word {word}?",
        [
            f"If all {len(word)} letters were different there would be {len(word)}! = "
            f"{math.factorial(len(word))} arrangements.",
            f"But some letters repeat: {listed}. Swapping identical letters does not create a "
            "new arrangement, so every distinct arrangement has been counted once for each "
            "way of permuting the identical letters among themselves.",
            f"Divide by the factorial of each repeat count: {math.factorial(len(word))} ÷ "
            f"{denom} = {result}.",
        ],
        f"There are {result} distinct arrangements.",
    )


def odd_numbers_proof(rng: random.Random) -> Problem:
    n = rng.randint(6, 40)
    return Problem(
        "Proofs",
        "Why the sum of the first n odd numbers is a perfect square",
        f"Prove that 1 + 3 + 5 + ... + (2n − 1) = n² for every positive integer n, and use it "
        f"to find the sum of the first {n} odd numbers.",
        [
            "Small cases suggest the pattern: 1 = 1, 1 + 3 = 4, 1 + 3 + 5 = 9, 1 + 3 + 5 + 7 = "
            "16. We prove it by induction.",
            "Base case: for n = 1 the left side is 1 and the right side is 1² = 1.",
            "Inductive step: suppose the sum of the first k odd numbers is k². The next odd "
            "number is 2k + 1, so the sum of the first k + 1 odd numbers is k² + 2k + 1 = "
            "(k + 1)². Hence the statement holding for k implies it holds for k + 1, and by "
            "induction it holds for all n.",
            "There is also a picture proof: a k by k square of dots becomes a (k + 1) by "
            "(k + 1) square when you add an L-shaped border of 2k + 1 dots.",
            f"For n = {n}, the last odd number is {2 * n - 1} and the sum is {n}² = {n * n}.",
        ],
        f"The sum of the first {n} odd numbers is {n * n}.",
    )


def arithmetic_sum(rng: random.Random) -> Problem:
    lo = rng.randint(1, 60)
    hi = lo + rng.randint(40, 400)
    count = hi - lo + 1
    total = count * (lo + hi) // 2
    return Problem(
        "Algebra",
        f"Adding all the whole numbers from {lo} to {hi} without a calculator",
        f"Find the sum {lo} + {lo + 1} + {lo + 2} + ... + {hi}.",
        [
            "Write the sum forwards and backwards and add the two lines term by term. Each "
            f"pair adds to the same value: {lo} + {hi} = {lo + hi}.",
            f"There are {hi} − {lo} + 1 = {count} terms, so the two lines together add to "
            f"{count} × {lo + hi} = {count * (lo + hi)}.",
            f"That is twice the sum we want, so the sum is {count * (lo + hi)} ÷ 2 = {total}.",
            "In general, the sum of an arithmetic series is the number of terms times the "
            "average of the first and last terms.",
        ],
        f"The sum is {total}.",
    )


def sqrt2_irrational(rng: random.Random) -> Problem:
    return Problem(
        "Proofs",
        "A classic proof: the square root of 2 is irrational",
        "Prove that there are no whole numbers p and q with (p/q)² = 2, that is, that √2 is "
        "irrational.",
        [
            "Suppose, for contradiction, that √2 = p/q where p and q are positive integers "
            "with no common factor. Any fraction can be reduced to this form, so we lose "
            "nothing by assuming it.",
            "Squaring gives p² = 2q², so p² is even. The square of an odd number is odd, so "
            "p itself must be even; write p = 2m.",
            "Substituting, 4m² = 2q², so q² = 2m², which means q² is even and so q is even.",
            "Now p and q are both even, so they share the factor 2. This contradicts our "
            "assumption that the fraction was in lowest terms.",
            "The assumption must be false, so no such fraction exists, and √2 is irrational. "
            "The same argument works for the square root of any prime.",
        ],
        None,
    )


def infinitely_many_primes(rng: random.Random) -> Problem:
    return Problem(
        "Proofs",
        "Why the primes never run out",
        "Show that there are infinitely many prime numbers.",
        [
            "Suppose there were only finitely many primes, and list them all: p1, p2, ..., pk.",
            "Consider the number N = p1 × p2 × ... × pk + 1. Dividing N by any prime on the "
            "list leaves a remainder of 1, so none of them divides N.",
            "But every whole number greater than 1 has at least one prime factor. Whatever "
            "prime divides N is therefore not on our list, which was supposed to be complete.",
            "This contradiction shows that no finite list can contain every prime.",
            "A common misreading is that N itself must be prime. It need not be: 2 × 3 × 5 × "
            "7 × 11 × 13 + 1 = 30031 = 59 × 509. The argument only needs N to have a prime "
            "factor missing from the list.",
        ],
        None,
    )


ATOMIC_MASS = {"H": 1.008, "C": 12.011, "N": 14.007, "O": 15.999, "Na": 22.990, "Cl": 35.45,
               "Ca": 40.078}  # fmt: skip
COMPOUNDS = [
    ("sodium chloride", "NaCl", {"Na": 1, "Cl": 1}),
    ("water", "H2O", {"H": 2, "O": 1}),
    ("carbon dioxide", "CO2", {"C": 1, "O": 2}),
    ("glucose", "C6H12O6", {"C": 6, "H": 12, "O": 6}),
    ("calcium carbonate", "CaCO3", {"Ca": 1, "C": 1, "O": 3}),
    ("ammonia", "NH3", {"N": 1, "H": 3}),
]


def moles(rng: random.Random) -> Problem:
    name, formula, atoms = rng.choice(COMPOUNDS)
    mass = rng.randint(5, 250)
    parts = [f"{n} × {ATOMIC_MASS[el]}" for el, n in atoms.items()]
    molar = sum(n * ATOMIC_MASS[el] for el, n in atoms.items())
    mol = mass / molar
    return Problem(
        "Chemistry",
        f"How many moles are in {mass} g of {name}?",
        f"How many moles of {name} ({formula}) are there in a {mass} g sample, and how many "
        "molecules (or formula units) does that correspond to?",
        [
            "First find the molar mass by adding up the atomic masses of the atoms in the formula.",
            f"M({formula}) = {' + '.join(parts)} = {num(molar, 3)} g/mol.",
            f"The amount of substance is mass divided by molar mass: n = {mass} ÷ "
            f"{num(molar, 3)} = {num(mol, 4)} mol.",
            f"Each mole contains Avogadro's number, 6.022 × 10^23, of particles, so the sample "
            f"contains {num(mol, 4)} × 6.022 × 10^23 = {sci(mol * 6.022e23)} of them.",
        ],
        f"{num(mol, 3)} mol, about {sci(mol * 6.022e23)} particles.",
    )


def dilution(rng: random.Random) -> Problem:
    c1 = rng.choice([1.0, 2.0, 2.5, 5.0, 6.0, 10.0])
    c2 = rng.choice([x for x in [0.1, 0.2, 0.25, 0.5, 0.75] if x < c1])
    v2 = rng.choice([100, 250, 500, 750, 1000])
    v1 = c2 * v2 / c1
    return Problem(
        "Chemistry",
        "Making a dilute solution from a stock solution",
        f"A lab has a {num(c1)} mol/L stock solution of hydrochloric acid. What volume of "
        f"stock is needed to make {v2} mL of a {num(c2)} mol/L solution, and how much water "
        "must be added?",
        [
            "Diluting does not change the amount of solute, only the volume it is spread "
            "through. So the moles taken from the stock equal the moles in the final solution: "
            "C1V1 = C2V2.",
            f"Rearranging, V1 = C2V2 ÷ C1 = {num(c2)} × {v2} ÷ {num(c1)} = {num(v1)} mL.",
            f"The rest of the volume is water: {v2} − {num(v1)} = {num(v2 - v1)} mL.",
            "For safety with acids, add the acid to the water rather than the other way "
            "round, then make up to the mark.",
        ],
        f"{num(v1)} mL of stock and {num(v2 - v1)} mL of water.",
    )


def ideal_gas(rng: random.Random) -> Problem:
    n = rng.choice([0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    t_c = rng.randint(-10, 80)
    vol = rng.choice([10, 15, 20, 25, 40, 50])
    t_k = t_c + 273.15
    p_pa = n * 8.314 * t_k / (vol / 1000)
    return Problem(
        "Chemistry",
        "Using the ideal gas law to find pressure",
        f"{num(n)} mol of nitrogen is held in a sealed {vol} L container at {t_c} °C. "
        "Assuming ideal behaviour, what is the pressure inside the container?",
        [
            "The ideal gas law is PV = nRT, with R = 8.314 J/(mol·K). Everything must be in SI "
            "units: kelvin for temperature and cubic metres for volume.",
            f"T = {t_c} + 273.15 = {num(t_k)} K, and V = {vol} L = {num(vol / 1000, 3)} m³.",
            f"P = nRT ÷ V = {num(n)} × 8.314 × {num(t_k)} ÷ {num(vol / 1000, 3)} = "
            f"{num(p_pa, 0)} Pa.",
            f"That is {num(p_pa / 1000, 1)} kPa, or about {num(p_pa / 101325, 2)} times "
            "standard atmospheric pressure.",
        ],
        f"About {num(p_pa / 1000, 1)} kPa.",
    )


def summary_statistics(rng: random.Random) -> Problem:
    what, lo, hi, unit = rng.choice(
        [
            ("daily commute times", 18, 55, "minutes"),
            ("scores on a short quiz", 8, 20, "points"),
            ("numbers of visitors to a small museum on weekdays", 30, 95, "visitors"),
            ("weights of apples from one tree", 120, 210, "grams"),
        ]
    )
    data = [rng.randint(lo, hi) for _ in range(rng.choice([7, 8, 9]))]
    n = len(data)
    mean = sum(data) / n
    srt = sorted(data)
    median = srt[n // 2] if n % 2 else (srt[n // 2 - 1] + srt[n // 2]) / 2
    ss = sum((x - mean) ** 2 for x in data)
    sd = math.sqrt(ss / (n - 1))
    mid = "the middle value" if n % 2 else "the mean of the two middle values"
    return Problem(
        "Statistics",
        f"Mean, median and standard deviation of {n} {what}",
        f"Here are {n} {what}, in {unit}: {', '.join(map(str, data))}. Find the mean, the "
        "median and the sample standard deviation.",
        [
            f"Mean: add the values and divide by how many there are. The total is {sum(data)}, "
            f"so the mean is {sum(data)} ÷ {n} = {num(mean, 3)} {unit}.",
            f"Median: sort the values, giving {', '.join(map(str, srt))}. With {n} values the "
            f"median is {mid}, which is {num(median)} {unit}.",
            f"Standard deviation: subtract the mean from each value, square the differences "
            f"and add them up. The sum of squared deviations is {num(ss, 3)}.",
            f"For a sample we divide by n − 1 = {n - 1}, giving a variance of "
            f"{num(ss / (n - 1), 3)}, and the square root gives {num(sd, 3)} {unit}.",
        ],
        f"Mean {num(mean, 2)}, median {num(median)}, standard deviation {num(sd, 2)}.",
    )


def euclid_gcd(rng: random.Random) -> Problem:
    g = rng.randint(3, 40)
    x, y = rng.randint(5, 60), rng.randint(5, 60)
    while math.gcd(x, y) != 1 or x == y:
        y = rng.randint(5, 60)
    a, b = max(x, y) * g, min(x, y) * g
    lines, p, q = [], a, b
    while q:
        lines.append(f"{p} = {p // q} × {q} + {p % q}")
        p, q = q, p % q
    lcm = a * b // g
    return Problem(
        "Algorithms",
        f"Euclid's algorithm step by step: gcd({a}, {b})",
        f"Use Euclid's algorithm to find the greatest common divisor of {a} and {b}, and then "
        "their least common multiple.",
        [
            "Euclid's algorithm rests on one fact: gcd(a, b) = gcd(b, a mod b). We keep "
            "replacing the pair by the smaller number and the remainder until the remainder "
            "is zero.",
            "The divisions are:\n" + "\n".join(lines),
            f"The last non-zero remainder is {g}, so gcd({a}, {b}) = {g}. It took "
            f"{len(lines)} divisions.",
            f"Because gcd × lcm = a × b, the least common multiple is {a} × {b} ÷ {g} = {lcm}.",
        ],
        f"gcd = {g}, lcm = {lcm}.",
    )


def binary_search(rng: random.Random) -> Problem:
    values = sorted(rng.sample(range(2, 99), 15))
    present = rng.random() < 0.7
    target = (
        rng.choice(values) if present else rng.choice([v for v in range(2, 99) if v not in values])
    )
    lines, lo, hi, found = [], 0, len(values) - 1, -1
    while lo <= hi:
        mid = (lo + hi) // 2
        v = values[mid]
        if v == target:
            lines.append(f"low={lo}, high={hi}, mid={mid}: value {v} equals the target, stop.")
            found = mid
            break
        if v < target:
            lines.append(f"low={lo}, high={hi}, mid={mid}: {v} < {target}, so low = {mid + 1}.")
            lo = mid + 1
        else:
            lines.append(f"low={lo}, high={hi}, mid={mid}: {v} > {target}, so high = {mid - 1}.")
            hi = mid - 1
    end = (
        f"The target {target} is at index {found}, found after {len(lines)} comparisons."
        if found >= 0
        else f"Now low > high, so {target} is not in the list; that took {len(lines)} comparisons."
    )
    return Problem(
        "Algorithms",
        f"Tracing a binary search for {target}",
        f"Trace a binary search for the value {target} in the sorted list "
        f"[{', '.join(map(str, values))}], using zero-based indices and mid = (low + high) // 2.",
        [
            "Binary search keeps an interval [low, high] that must contain the target if it "
            "is present, and halves it with every comparison.",
            "The trace:\n" + "\n".join(lines),
            end,
            "With 15 elements, at most 4 comparisons are ever needed, because 2^4 = 16 > 15. "
            "A linear scan could need all 15.",
        ],
        f"Index {found}." if found >= 0 else "Not present.",
    )


def break_even(rng: random.Random) -> Problem:
    fixed = rng.randrange(1200, 9001, 100)
    price = rng.randint(6, 30)
    var = rng.randint(2, price - 3)
    margin = price - var
    units = math.ceil(fixed / margin)
    volume = units + rng.randint(50, 400)
    return Problem(
        "Economics",
        "Break-even point for a small business",
        f"A small print shop pays {fixed} a month in rent and wages. Each poster it sells "
        f"for {price} costs {var} in paper and ink. How many posters must it sell each month "
        f"to break even, and what is the profit if it sells {volume}?",
        [
            f"Each poster contributes its price minus its variable cost towards the fixed "
            f"costs: {price} − {var} = {margin}. This is the contribution margin.",
            f"Break-even quantity = fixed costs ÷ contribution margin = {fixed} ÷ {margin} = "
            f"{num(fixed / margin)}.",
            f"Posters come in whole numbers, so the shop needs to sell {units} to cover its costs.",
            f"At {volume} posters, profit = {volume} × {margin} − {fixed} = "
            f"{volume * margin - fixed}.",
        ],
        f"Break-even at {units} posters; profit {volume * margin - fixed} at {volume}.",
    )


def elasticity(rng: random.Random) -> Problem:
    p1 = rng.randint(4, 20)
    p2 = p1 + rng.randint(1, 4)
    q1 = rng.randint(200, 900)
    q2 = q1 - rng.randint(10, q1 // 2)
    dq = (q2 - q1) / ((q1 + q2) / 2)
    dp = (p2 - p1) / ((p1 + p2) / 2)
    e = dq / dp
    kind = "elastic" if abs(e) > 1 else "inelastic" if abs(e) < 1 else "unit elastic"
    rev = "falls" if p2 * q2 < p1 * q1 else "rises"
    return Problem(
        "Economics",
        "Price elasticity of demand with the midpoint method",
        f"When a cinema raises its ticket price from {p1} to {p2}, weekly attendance falls "
        f"from {q1} to {q2}. Calculate the price elasticity of demand using the midpoint "
        "method, and say what happens to revenue.",
        [
            "The midpoint method measures percentage changes against the average of the old "
            "and new values, so the answer is the same whichever direction we go.",
            f"Change in quantity: ({q2} − {q1}) ÷ {num((q1 + q2) / 2)} = {num(dq * 100, 2)}%.",
            f"Change in price: ({p2} − {p1}) ÷ {num((p1 + p2) / 2)} = {num(dp * 100, 2)}%.",
            f"Elasticity = {num(dq * 100, 2)} ÷ {num(dp * 100, 2)} = {num(e, 3)}. Its size is "
            f"{'greater' if abs(e) > 1 else 'less'} than one, so demand is {kind} over this "
            "range.",
            f"Revenue goes from {p1} × {q1} = {p1 * q1} to {p2} × {q2} = {p2 * q2}, so it "
            f"{rev}, as the elasticity predicts.",
        ],
        f"Elasticity ≈ {num(e, 2)} ({kind}); revenue {rev}.",
    )


def work_rate(rng: random.Random) -> Problem:
    a, b = rng.sample([2, 3, 4, 5, 6, 8, 9, 10, 12], 2)
    together = Fraction(a * b, a + b)
    hours = float(together)
    h, m = int(hours), round((hours - int(hours)) * 60)
    if m == 60:
        h, m = h + 1, 0
    return Problem(
        "Algebra",
        "Two hoses filling a pond: a work-rate problem",
        f"One hose can fill a garden pond in {a} hours and a second hose can fill it in {b} "
        "hours. How long does it take if both hoses run together?",
        [
            "Think in rates rather than times: each hose fills a fraction of the pond per "
            "hour, and rates add when they work together.",
            f"The first hose fills 1/{a} of the pond per hour and the second 1/{b}.",
            f"Together: 1/{a} + 1/{b} = {b}/{a * b} + {a}/{a * b} = {a + b}/{a * b} of the pond "
            "per hour.",
            f"The time is the reciprocal: {a * b}/{a + b} = {frac(together)} hours, which is "
            f"{h} h {m} min. It has to be less than {min(a, b)} hours, the faster hose alone, "
            "and it is.",
        ],
        f"{frac(together)} hours, about {h} h {m} min.",
    )


def circuit(rng: random.Random) -> Problem:
    r1, r2 = rng.choice([(6, 3), (12, 6), (10, 15), (20, 30), (4, 12), (8, 8), (18, 9)])
    r3 = rng.choice([2, 4, 5, 6, 10])
    v = rng.choice([6, 9, 12, 24])
    rp = r1 * r2 / (r1 + r2)
    rt = rp + r3
    i = v / rt
    return Problem(
        "Physics",
        "Series and parallel resistors: current and power",
        f"Two resistors of {r1} Ω and {r2} Ω are connected in parallel, and that pair is "
        f"connected in series with a {r3} Ω resistor across a {v} V battery. Find the total "
        "resistance, the current from the battery and the power dissipated in the circuit.",
        [
            f"Parallel resistors combine as R = R1R2 ÷ (R1 + R2) = {r1} × {r2} ÷ {r1 + r2} = "
            f"{num(rp)} Ω. The combination is always smaller than either resistor.",
            f"Series resistances add: R_total = {num(rp)} + {r3} = {num(rt)} Ω.",
            f"Ohm's law gives the current: I = V ÷ R = {v} ÷ {num(rt)} = {num(i, 3)} A.",
            f"Power: P = VI = {v} × {num(i, 3)} = {num(v * i, 2)} W. The voltage across the "
            f"series resistor is {num(i * r3, 2)} V, leaving {num(v - i * r3, 2)} V across the "
            "parallel pair.",
        ],
        f"{num(rt)} Ω, {num(i, 3)} A, {num(v * i, 2)} W.",
    )


def energy_cost(rng: random.Random) -> Problem:
    thing, watts, new_watts = rng.choice(
        [
            ("an old chest freezer", 150, 60),
            ("a desktop computer left on", 120, 35),
            ("an electric heater", 2000, 1200),
            ("halogen spotlights in a kitchen", 300, 40),
        ]
    )
    hours = rng.choice([4, 6, 8, 10, 12])
    price = rng.choice([0.15, 0.2, 0.25, 0.28, 0.32])
    new_cost = rng.randint(60, 400)
    kwh = watts * hours * 365 / 1000
    new_kwh = new_watts * hours * 365 / 1000
    saving = (kwh - new_kwh) * price
    return Problem(
        "Physics",
        f"What does {thing} cost to run for a year?",
        f"{cap(thing)} draws {watts} W and runs about {hours} hours a day. Electricity costs "
        f"{num(price)} per kWh. What does it cost per year? A replacement drawing {new_watts} W "
        f"costs {new_cost}; how long would it take to pay for itself?",
        [
            "Energy in kilowatt-hours is power in kilowatts times hours of use.",
            f"Per year: {num(watts / 1000, 3)} kW × {hours} h × 365 = {num(kwh, 1)} kWh, costing "
            f"{num(kwh, 1)} × {num(price)} = {num(kwh * price)} per year.",
            f"The replacement would use {num(new_watts / 1000, 3)} kW × {hours} × 365 = "
            f"{num(new_kwh, 1)} kWh, costing {num(new_kwh * price)}, a saving of "
            f"{num(saving)} a year.",
            f"Payback time = purchase price ÷ annual saving = {new_cost} ÷ {num(saving)} = "
            f"{num(new_cost / saving, 1)} years.",
        ],
        f"{num(kwh * price)} per year; payback in about {num(new_cost / saving, 1)} years.",
    )


def birthday(rng: random.Random) -> Problem:
    n = rng.randint(15, 45)
    p_none = math.prod((365 - i) / 365 for i in range(n))
    return Problem(
        "Probability",
        f"The birthday problem with {n} people",
        f"In a room of {n} people, what is the probability that at least two share a "
        "birthday? Ignore leap years and assume all 365 birthdays are equally likely.",
        [
            "Counting the ways to share is messy, so compute the probability that everyone "
            "has a different birthday, then subtract from one.",
            "The first person can have any birthday. The second must avoid one day "
            "(probability 364/365), the third must avoid two (363/365), and so on.",
            f"For {n} people, P(all different) = 365/365 × 364/365 × ... × {366 - n}/365 = "
            f"{num(p_none, 4)}.",
            f"So P(at least one shared birthday) = 1 − {num(p_none, 4)} = {num(1 - p_none, 4)}.",
            "Intuition misleads here because the number of pairs grows quickly: with "
            f"{n} people there are {n * (n - 1) // 2} pairs that could match.",
        ],
        f"About {num((1 - p_none) * 100, 1)}%.",
    )


def at_least_one_six(rng: random.Random) -> Problem:
    if rng.random() < 0.5:
        n = rng.randint(2, 8)
        p = 1 - (5 / 6) ** n
        return Problem(
            "Probability",
            f"Probability of at least one six in {n} rolls",
            f"A fair die is rolled {n} times. What is the probability of getting at least one six?",
            [
                "'At least one' problems are easiest through the complement: no six at all.",
                f"Each roll misses a six with probability 5/6, and the rolls are independent, "
                f"so P(no six) = (5/6)^{n} = {num((5 / 6) ** n, 4)}.",
                f"P(at least one six) = 1 − {num((5 / 6) ** n, 4)} = {num(p, 4)}.",
                "It is tempting to add 1/6 for each roll, but that overcounts outcomes with "
                f"several sixes and would give {n}/6, which exceeds one for more than six rolls.",
            ],
            f"About {num(p, 4)}.",
        )
    n = rng.choice([20, 24, 25, 30])
    p = 1 - (35 / 36) ** n
    return Problem(
        "Probability",
        f"A gambler's question: a double six in {n} throws",
        f"Two dice are thrown together {n} times. Is it more likely than not that a double "
        "six appears at least once?",
        [
            "A double six has probability 1/36 on each throw of the pair, so missing it has "
            "probability 35/36.",
            f"Over {n} independent throws, P(no double six) = (35/36)^{n} = "
            f"{num((35 / 36) ** n, 4)}.",
            f"So P(at least one double six) = {num(p, 4)}, which is "
            f"{'above' if p > 0.5 else 'below'} one half.",
            "Solving (35/36)^n < 1/2 gives n > ln 2 ÷ ln(36/35) ≈ 24.6, so 25 throws is the "
            "smallest number that makes the bet favourable.",
        ],
        f"P ≈ {num(p, 4)}; {'yes' if p > 0.5 else 'no'}.",
    )


def speed_camera_argument(rng: random.Random) -> Problem:
    before = rng.randint(40, 90)
    after = round(before * rng.uniform(0.45, 0.7))
    c_before = rng.randint(300, 900)
    c_after = round(c_before * rng.uniform(0.7, 0.9))
    naive = (before - after) / before
    trend = c_after / c_before
    expected = before * trend
    adjusted = (expected - after) / expected
    return Problem(
        "Reasoning",
        "Did the new speed cameras really cut crashes? Weighing the evidence",
        f"A council installed speed cameras at the sites with the most crashes. In the three "
        f"years before, those sites had {before} crashes; in the three years after, {after}. "
        f"Over the same periods, similar roads without cameras went from {c_before} to "
        f"{c_after} crashes. How much of the fall can fairly be credited to the cameras?",
        [
            f"The headline figure is a fall of ({before} − {after}) ÷ {before} = "
            f"{num(naive * 100, 1)}%. But two other forces could produce a fall without any "
            "cameras at all.",
            "First, regression to the mean: the sites were chosen because they had "
            "unusually many crashes. Some of that was bad luck, and bad luck tends not to "
            "repeat, so those sites would likely have improved anyway.",
            f"Second, the general trend: roads without cameras also improved, by a factor of "
            f"{c_after} ÷ {c_before} = {num(trend, 3)}, perhaps thanks to safer cars or "
            "changes in traffic.",
            f"Applying that trend, the camera sites would have been expected to have "
            f"{before} × {num(trend, 3)} = {num(expected, 1)} crashes without cameras. "
            f"Compared with the {after} observed, the reduction is ({num(expected, 1)} − "
            f"{after}) ÷ {num(expected, 1)} = {num(adjusted * 100, 1)}%.",
            "That adjusted figure still ignores regression to the mean, so the true effect is "
            "probably smaller again. A fair conclusion is that the cameras likely helped, but "
            "by less than the headline suggests; comparing with other high-crash sites that "
            "did not get cameras would settle it.",
        ],
        f"At most about {num(adjusted * 100, 0)}% rather than the headline {num(naive * 100, 0)}%.",
    )


def survivorship_argument(rng: random.Random) -> Problem:
    return Problem(
        "Reasoning",
        "Should we copy the habits of businesses that survived? An argument about evidence",
        "A popular book studies twenty long-lived companies and finds that all of them had "
        "bold founders who ignored advice. It concludes that ignoring advice makes a "
        "business succeed. Is the conclusion justified?",
        [
            "The claim is causal: a trait leads to survival. To support it, we need to know "
            "how common the trait is among businesses that failed, not only among those that "
            "survived.",
            "The sample contains only survivors. If bold, advice-ignoring founders are also "
            "common, or even more common, among failed businesses, the trait may predict "
            "nothing, or may predict failure.",
            "This is survivorship bias. A similar mistake would be to study only the planes "
            "that returned from missions and reinforce the places where they were hit, when "
            "the planes hit elsewhere never came back to be counted.",
            "There is also a selection problem in the story-telling: memorable founders make "
            "good anecdotes, so the traits that get noticed are the dramatic ones.",
            "So the conclusion is not justified by this evidence. A better study would start "
            "from all businesses founded in a given year and compare the traits of those that "
            "failed with those that lasted.",
        ],
        None,
    )


def quadratic_derivation(rng: random.Random) -> Problem:
    r1, r2 = rng.sample([v for v in range(-9, 10) if v != 0], 2)
    a = rng.choice([1, 1, 2, 3])
    b, c = -a * (r1 + r2), a * r1 * r2
    disc = b * b - 4 * a * c
    root = math.isqrt(disc)
    lo, hi = sorted((r1, r2))

    def term(coef: int, x: str) -> str:
        sign = "+" if coef >= 0 else "−"
        return f" {sign} {abs(coef)}{x}" if abs(coef) != 1 or not x else f" {sign} {x}"

    lead = "x²" if a == 1 else f"{a}x²"
    eq = f"{lead}{term(b, 'x') if b else ''}{term(c, '') if c else ''} = 0"
    return Problem(
        "Algebra",
        "Deriving the quadratic formula by completing the square",
        f"Derive the formula for the roots of ax² + bx + c = 0, and use it to solve {eq}.",
        [
            "The idea is to rewrite the left-hand side as a perfect square, because a square is "
            "easy to undo: we just take a square root. Start from ax² + bx + c = 0 with a ≠ 0 "
            "and divide by a, which gives x² + (b/a)x + c/a = 0.",
            "Complete the square. Half the coefficient of x is b/(2a), so x² + (b/a)x = "
            "(x + b/(2a))² − b²/(4a²). The equation becomes (x + b/(2a))² = (b² − 4ac)/(4a²).",
            "Taking square roots, x + b/(2a) = ±√(b² − 4ac)/(2a), so x = (−b ± √(b² − 4ac)) "
            "/ (2a). The expression under the root is the discriminant: it decides whether "
            "there are two, one or no real roots.",
            f"For {eq}: a = {a}, b = {b}, c = {c}. The discriminant is {paren(b)}² − 4 × {a} × "
            f"{paren(c)} = {disc}, whose square root is {root}.",
            f"So x = ({-b} ± {root}) / {2 * a}, giving x = {hi} or x = {lo}. Substituting "
            "either value back into the equation gives zero, as it should.",
        ],
        f"x = {lo} or x = {hi}.",
    )


def percent_trap(rng: random.Random) -> Problem:
    p = rng.choice([10, 15, 20, 25, 30, 40, 50])
    price = rng.randrange(40, 401, 10)
    up = price * (1 + p / 100)
    down = up * (1 - p / 100)
    return Problem(
        "Arithmetic",
        f"Up {p}%, then down {p}%: why you don't get back to where you started",
        f"A jacket costs {price}. The shop raises the price by {p}%, then a month later "
        f"advertises {p}% off. What is the final price, and what is the overall percentage "
        "change?",
        [
            f"The increase is applied to {price}: {price} × {num(1 + p / 100)} = {num(up)}.",
            f"The discount is applied to the new, higher price: {num(up)} × "
            f"{num(1 - p / 100)} = {num(down)}.",
            f"Overall the price was multiplied by {num(1 + p / 100)} × {num(1 - p / 100)} = "
            f"{num((1 + p / 100) * (1 - p / 100), 4)}, a change of "
            f"−{num(p * p / 100, 2)}%.",
            "In general, a rise of p% followed by a fall of p% leaves a net fall of p²/100 "
            "percent, because the fall is taken from a larger base than the rise.",
        ],
        f"Final price {num(down)}, a {num(p * p / 100, 2)}% decrease overall.",
    )


def loan_payment(rng: random.Random) -> Problem:
    principal = rng.randrange(5000, 40001, 1000)
    rate = rng.choice([3.9, 4.5, 5.9, 6.5, 7.9, 8.5])
    years = rng.choice([2, 3, 4, 5, 7])
    r, n = rate / 1200, years * 12
    pay = principal * r / (1 - (1 + r) ** -n)
    return Problem(
        "Finance",
        f"Monthly repayments on a {num(principal, 0)} loan",
        f"A car loan of {num(principal, 0)} is taken at {num(rate)}% a year, repaid in equal "
        f"monthly instalments over {years} years. What is the monthly payment, and how much "
        "interest is paid in total?",
        [
            f"Monthly rate r = {num(rate)}% ÷ 12 = {num(r, 6)}, and the number of payments is "
            f"n = {n}.",
            "For a fixed-payment loan, the present value of all payments must equal the "
            "amount borrowed. Summing the geometric series of discounted payments gives "
            "M = P·r ÷ (1 − (1 + r)^(−n)).",
            f"(1 + r)^(−n) = {num((1 + r) ** -n, 5)}, so M = {num(principal, 0)} × {num(r, 6)} ÷ "
            f"{num(1 - (1 + r) ** -n, 5)} = {num(pay)}.",
            f"Total repaid = {n} × {num(pay)} = {num(pay * n)}, so the interest is "
            f"{num(pay * n - principal)}.",
        ],
        f"{num(pay)} per month; {num(pay * n - principal)} in interest.",
    )


def grade_needed(rng: random.Random) -> Problem:
    course = rng.randint(52, 88)
    weight = rng.choice([30, 40, 50, 60])
    target = rng.choice([60, 65, 70, 75, 80])
    need = (target - course * weight / 100) / (1 - weight / 100)
    verdict = (
        "which is achievable"
        if 0 <= need <= 100
        else "which is impossible, so the target cannot be reached"
        if need > 100
        else "so the target is already secured"
    )
    return Problem(
        "Arithmetic",
        "What do I need on the final exam? A weighted average problem",
        f"Coursework counts for {weight}% of a module grade and the final exam for the "
        f"remaining {100 - weight}%. A student has {course}% on the coursework. What exam "
        f"mark does she need to finish with {target}% overall?",
        [
            f"The overall mark is a weighted average: overall = {num(weight / 100)} × "
            f"coursework + {num(1 - weight / 100)} × exam.",
            f"Setting the overall mark to {target}: {target} = {num(weight / 100)} × {course} + "
            f"{num(1 - weight / 100)} × E = {num(course * weight / 100)} + "
            f"{num(1 - weight / 100)}E.",
            f"So E = ({target} − {num(course * weight / 100)}) ÷ {num(1 - weight / 100)} = "
            f"{num(need, 2)}, {verdict}.",
        ],
        f"She needs {num(need, 1)}% on the exam.",
    )


def monty_hall(rng: random.Random) -> Problem:
    return Problem(
        "Probability",
        "The three doors puzzle: should you switch?",
        "A game show has three doors: one hides a car, two hide goats. You pick a door. The "
        "host, who knows where the car is, always opens another door with a goat and offers "
        "you the chance to switch. Should you?",
        [
            "Your first pick is right with probability 1/3 and wrong with probability 2/3, "
            "and nothing the host does changes that.",
            "If your first pick was wrong, the car is behind one of the other two doors, and "
            "the host must open the one with the goat. Switching then wins for certain.",
            "If your first pick was right, switching loses.",
            "So switching wins exactly when the first pick was wrong: probability 2/3. "
            "Staying wins with probability 1/3.",
            "The intuition that it is 50:50 ignores that the host's choice is not random: he "
            "is forced to avoid the car, and that gives you information.",
        ],
        "Switch: it wins with probability 2/3.",
    )


def doubling_sum(rng: random.Random) -> Problem:
    n = rng.randint(10, 24)
    return Problem(
        "Algebra",
        "A savings challenge that doubles every day: summing a geometric series",
        f"On day 1 you put 1 coin in a jar, on day 2 you put 2, on day 3 you put 4, doubling "
        f"each day. How many coins are in the jar after {n} days?",
        [
            f"The total is S = 1 + 2 + 4 + ... + 2^{n - 1}, a geometric series with first term "
            f"1, ratio 2 and {n} terms.",
            f"Multiply by 2: 2S = 2 + 4 + ... + 2^{n}. Subtracting S from 2S, every term "
            f"cancels except the last of 2S and the first of S, so S = 2^{n} − 1.",
            f"With {n} days, S = {2**n} − 1 = {2**n - 1}.",
            "The same trick gives the general formula a(rⁿ − 1)/(r − 1) for any first term a "
            "and ratio r ≠ 1. It also shows why doubling gets out of hand: the last day "
            "alone adds more than all the previous days put together.",
        ],
        f"{2**n - 1:,} coins.",
    )


def derivative_first_principles(rng: random.Random) -> Problem:
    c, a = rng.randint(2, 9), rng.randint(-5, 6)
    slope = 2 * c * a
    y0 = c * a * a
    intercept = y0 - slope * a
    sign = "+" if intercept >= 0 else "−"
    return Problem(
        "Calculus",
        f"The derivative of {c}x² from first principles",
        f"Using the definition of the derivative as a limit, find the derivative of "
        f"f(x) = {c}x², and find the equation of the tangent line at x = {a}.",
        [
            "The derivative is the limit of the difference quotient (f(x + h) − f(x)) / h "
            "as h approaches zero.",
            f"f(x + h) = {c}(x + h)² = {c}x² + {2 * c}xh + {c}h², so f(x + h) − f(x) = "
            f"{2 * c}xh + {c}h².",
            f"Dividing by h gives {2 * c}x + {c}h, and as h goes to zero this tends to "
            f"{2 * c}x. So f'(x) = {2 * c}x.",
            f"At x = {a}, the slope is {2 * c} × {paren(a)} = {slope} and the point on the curve "
            f"is ({a}, {y0}). The tangent line is y − {y0} = {slope}(x − {paren(a)}), which "
            f"simplifies to "
            f"y = {slope}x {sign} {abs(intercept)}.",
        ],
        f"f'(x) = {2 * c}x; tangent y = {slope}x {sign} {abs(intercept)}.",
    )


def mixture(rng: random.Random) -> Problem:
    strong, weak = rng.choice([(40, 10), (30, 5), (50, 20), (25, 10), (60, 15)])
    target = rng.randint(weak + 3, strong - 3)
    total = rng.choice([10, 12, 20, 25, 30])
    x = total * (target - weak) / (strong - weak)
    return Problem(
        "Algebra",
        "Mixing two solutions to hit a target concentration",
        f"A gardener has a {strong}% fertiliser solution and a {weak}% solution. How many "
        f"litres of each should be mixed to make {total} litres of a {target}% solution?",
        [
            f"Let x be the litres of the {strong}% solution, so {total} − x litres are the "
            f"{weak}% solution.",
            f"The amount of fertiliser must match: {num(strong / 100)}x + "
            f"{num(weak / 100)}({total} − x) = {num(target / 100)} × {total}.",
            f"Expanding: {num(strong / 100)}x + {num(weak * total / 100)} − "
            f"{num(weak / 100)}x = {num(target * total / 100)}, so "
            f"{num((strong - weak) / 100)}x = {num((target - weak) * total / 100)}.",
            f"x = {num(x, 3)} litres of the {strong}% solution, and {num(total - x, 3)} litres "
            f"of the {weak}% solution.",
        ],
        f"{num(x, 2)} L of {strong}% and {num(total - x, 2)} L of {weak}%.",
    )


def streetlight_argument(rng: random.Random) -> Problem:
    lamps = rng.randrange(800, 6001, 100)
    old_w, new_w = rng.choice([(150, 60), (120, 45), (100, 40), (250, 90)])
    price = rng.choice([0.18, 0.22, 0.26, 0.3])
    unit_cost = rng.randint(180, 450)
    hours = 4200
    saving = lamps * (old_w - new_w) * hours / 1000 * price
    capital = lamps * unit_cost
    payback = capital / saving
    return Problem(
        "Reasoning",
        "Is replacing our streetlights with LEDs worth it? A cost-benefit argument",
        f"A town has {lamps} streetlights of {old_w} W each, lit about {hours} hours a year. "
        f"LED replacements use {new_w} W and cost {unit_cost} each, installed. Electricity "
        f"costs {num(price)} per kWh. Should the town replace them?",
        [
            f"Energy saved per lamp per year: ({old_w} − {new_w}) W × {hours} h = "
            f"{num((old_w - new_w) * hours / 1000, 1)} kWh. Across all lamps that is "
            f"{num(lamps * (old_w - new_w) * hours / 1000, 0)} kWh, worth "
            f"{num(saving, 0)} a year.",
            f"The up-front cost is {lamps} × {unit_cost} = {num(capital, 0)}, so the simple "
            f"payback period is {num(capital, 0)} ÷ {num(saving, 0)} = {num(payback, 1)} years.",
            "LED lamps typically last well over a decade and need far fewer visits to "
            "replace, so maintenance savings would shorten the payback further; ignoring them "
            "makes the estimate conservative.",
            "Against this: colder white light has been linked to complaints from residents "
            "and to effects on night-flying insects, which warmer-coloured LEDs and dimming "
            "late at night reduce. Borrowing costs would lengthen the payback.",
            f"On balance, with a payback of about {num(payback, 1)} years, the case is "
            f"{'strong' if payback < 8 else 'reasonable but not overwhelming'}, provided "
            "warm-coloured lamps are chosen.",
        ],
        f"Payback ≈ {num(payback, 1)} years on an annual saving of {num(saving, 0)}.",
    )


GENERATORS: list[Callable[[random.Random], Problem]] = [
    kinematics_from_rest, stopping_distance, vertical_throw, compound_interest, dice_sum,
    card_draws, ticket_equations, garden_area, heron_triangle, ladder, running_pace,
    supply_demand, dice_game_value, bayes_test, committee, word_arrangements,
    odd_numbers_proof, arithmetic_sum, sqrt2_irrational, infinitely_many_primes, moles,
    dilution, ideal_gas, summary_statistics, euclid_gcd, binary_search, break_even, elasticity,
    work_rate, circuit, energy_cost, birthday, at_least_one_six, speed_camera_argument,
    survivorship_argument, quadratic_derivation, percent_trap, loan_payment, grade_needed,
    monty_hall, doubling_sum, derivative_first_principles, mixture, streetlight_argument,
]  # fmt: skip
# Fixed-text problems appear once; drawing them twice would make identical documents.
ONCE = {"sqrt2_irrational", "infinitely_many_primes", "survivorship_argument", "monty_hall"}

REASONING_INTROS = [
    "Problems like this come up in almost every introductory course, so it is worth working "
    "through one slowly.",
    "The trick is to write down what we know before reaching for a formula.",
    "Here is a question a reader sent in last week, with a full worked solution.",
    "Below is a fully worked example. Try it yourself first, then compare your steps with ours.",
    "This is one of those questions where intuition and calculation can disagree, so let's "
    "calculate.",
    "We will go step by step and check the answer at the end.",
    "A student asked me about this after class, and it makes a nice example.",
    "Worked examples are the fastest way to learn this material; this one is from this week's "
    "practice sheet.",
]
ASKER_TAILS = [
    "I've been staring at this for an hour. Any hints?",
    "Our teacher went through it too fast and I don't get the second step.",
    "Can someone explain the method, not just the answer?",
    "This is from a revision sheet, exam is on Friday. Thanks in advance!",
    "I keep getting a different number from my friend, so one of us is wrong.",
    "Not homework, just curious how you would approach it.",
]
THANKS = [
    "Thanks, that makes sense now!",
    "Oh, I was forgetting the first step. Got it, thank you.",
    "Brilliant explanation, thanks so much.",
    "That's much clearer than my textbook.",
    "Thank you! Checked it and got the same.",
]
COURSES = [
    "Foundations of Quantitative Reasoning", "Introductory Physics", "Probability 101",
    "Mathematics for Economists", "Discrete Mathematics", "General Chemistry I",
    "Applied Statistics", "Algorithms and Data Structures", "Calculus I",
]  # fmt: skip
RELATED_QUESTIONS = [
    "How do I convert km/h to m/s without a calculator?",
    "Why do we divide by n - 1 in the sample variance?",
    "What is the difference between permutations and combinations?",
    "When should I use the complement rule in probability?",
    "How do I know which equation of motion to use?",
    "Is compound interest always better than simple interest?",
    "What does a negative discriminant mean?",
    "How do I check my answer to a system of equations?",
    "Why does the midpoint method give the same elasticity both ways?",
    "What is the fastest way to find a greatest common divisor?",
    "How is molar mass different from molecular mass?",
    "Can a probability ever be greater than one?",
]
MEMBERS_ONLY = (
    "The rest of this solution is for members. Log in or start a free trial to see every "
    "step and the final answer."
)


# Commentary that tutors add around a worked solution: more prose, as real pages have.
SUBJECT_NOTES = {
    "Physics": [
        "A common mistake is to mix units, for example kilometres per hour with seconds, or "
        "watts with kilowatts. Converting everything at the start avoids most errors.",
        "It is always worth asking whether the answer is physically sensible. A result that is "
        "wildly too large or too small usually means a slipped decimal point somewhere.",
        "Notice what the model leaves out, such as air resistance, friction or the resistance "
        "of the connecting wires. Simple models ignore these on purpose, and part of the skill "
        "is knowing when that is reasonable.",
    ],
    "Finance": [
        "Small differences in the rate matter more than people expect, because the effect "
        "compounds over every period. That is why comparing products on the annual "
        "percentage rate is so important.",
        "In practice fees and taxes change the real cost or return, so treat these figures as "
        "a first estimate rather than the last word.",
        "When you check a bank's calculator against your own, make sure you use the same "
        "compounding period; most disagreements come from that.",
    ],
    "Probability": [
        "Whenever a question says 'at least one', try the complement first. It usually turns "
        "a long sum into a single subtraction.",
        "It helps to write out the sample space for a small case and count by hand. Once the "
        "small case is right, the general formula is much easier to trust.",
        "Our intuition for chance is notoriously poor, which is exactly why careful counting "
        "beats guessing in problems like this one.",
    ],
    "Algebra": [
        "Always substitute your answer back into the original problem. It takes a minute and "
        "catches most arithmetic slips.",
        "Naming the quantities clearly at the start, with units, makes the algebra much easier "
        "to follow.",
        "Writing each step on its own line, rather than doing several at once in your head, is "
        "slower but far more reliable.",
    ],
    "Geometry": [
        "Drawing a sketch, even a rough one, is the single most useful step in a geometry "
        "problem. It shows which lengths you know and which you need.",
        "Keep an extra decimal place in intermediate results and round only at the end, or "
        "rounding errors can build up.",
        "Splitting an awkward shape into simple pieces, rectangles, triangles and circles, is "
        "a strategy that works far beyond this example.",
    ],
    "Measurement": [
        "The safest way to convert units is to multiply by fractions equal to one, such as "
        "1000 m over 1 km, and cancel units like algebraic symbols.",
        "If the answer comes out in strange units, that is a sign that a conversion was "
        "missed somewhere along the way.",
    ],
    "Economics": [
        "Models like this one are simplifications: real firms and markets face uncertainty, "
        "and prices and costs change over time.",
        "The interesting part is usually not the number itself but how it changes when one "
        "of the assumptions changes, for example when costs rise.",
        "Check that the answer makes economic sense: prices and quantities should be positive, "
        "and the direction of each effect should match intuition.",
    ],
    "Statistics": [
        "Statistics is as much about asking what the numbers mean as about computing them; "
        "always say which group of people or things the figures describe.",
        "Rounding too early is a common source of small errors; keep a few extra digits until "
        "the final step.",
        "Before calculating anything, look at the numbers. A quick glance often tells you "
        "roughly what the answer should be.",
    ],
    "Combinatorics": [
        "The key question in any counting problem is whether order matters. If it does, count "
        "permutations; if it does not, count combinations.",
        "Counting the complement, the cases you do not want, and subtracting is often simpler "
        "than counting the cases you do want directly.",
    ],
    "Proofs": [
        "A proof by contradiction assumes the opposite of what we want and shows that this "
        "leads to something impossible. It is one of the oldest tools in mathematics.",
        "Checking small cases is not a proof, but it is the best way to discover what to prove "
        "and to catch a false conjecture early.",
        "Try explaining the argument to someone else in your own words. If you cannot, one of "
        "the steps probably needs more justification.",
    ],
    "Chemistry": [
        "Keep track of significant figures: the answer cannot be more precise than the least "
        "precise measurement that went into it.",
        "Writing the units next to every number, grams, moles, litres, makes it obvious when "
        "a step has gone wrong.",
        "Real lab work adds uncertainties that the textbook calculation leaves out, such as "
        "impurities and measurement error in the glassware.",
    ],
    "Algorithms": [
        "Tracing an algorithm by hand on a small input is the best way to understand it, and "
        "also the best way to find the off-by-one errors that creep into code.",
        "The number of steps matters more than the speed of each step once the input gets "
        "large; that is the whole idea behind measuring complexity.",
    ],
    "Reasoning": [
        "The general lesson is to ask what the evidence would look like if the claim were "
        "false. If it would look much the same, the evidence does not support the claim.",
        "Good arguments state their assumptions openly, so that someone who disagrees knows "
        "exactly which premise to challenge.",
        "Numbers make an argument concrete, but they do not settle the question on their own; "
        "the judgement about costs that are hard to measure still has to be made.",
    ],
    "Arithmetic": [
        "Percentages are always percentages of something. Most confusion disappears once you "
        "ask what the base of each percentage is.",
        "A rough estimate before the exact calculation is a good habit: it tells you whether "
        "the final answer is in the right range.",
    ],
    "Calculus": [
        "The limit definition is rarely used for routine work, but it is what the shortcut "
        "rules are built on, so it is worth doing a few examples by hand.",
        "Geometrically, the derivative is the slope of the curve at a point, the limit of the "
        "slopes of chords through nearby points.",
    ],
}


def present(rng: random.Random, p: Problem, omit_answer: bool) -> tuple[str, str]:
    """Put a worked problem on a page: tutorial, forum thread, lecture notes or Q&A site."""
    steps = p.steps[:-1] if omit_answer else p.steps
    pool = SUBJECT_NOTES[p.subject]
    notes = rng.sample(pool, min(len(pool), rng.choice([1, 1, 2, 2, 3])))
    comments = [comment_block(rng, PAGE_COMMENTS, rng.randint(2, 4))] if rng.random() < 0.4 else []
    site = make_site(rng, "edu")
    style = rng.randrange(4)
    if style == 0:
        body = [rng.choice(REASONING_INTROS), f"Problem: {p.question}", "Solution", *steps]
        if omit_answer:
            body.append(MEMBERS_ONLY if rng.random() < 0.5 else "Try to finish it yourself!")
        elif p.answer:
            body.append(f"Answer: {p.answer}")
        body += notes + comments
        text = page(rng, site, "edu", p.title, body, chrome=rng.choice([0.4, 0.7, 0.9]))
        return text, url_for(rng, site, p.title, p.subject.lower())
    if style == 1:
        asker, helper, third = rng.sample(HANDLES, 3)
        subject = p.subject.lower()
        article = "an" if subject[0] in "aeiou" else "a"
        title = p.title if rng.random() < 0.5 else f"Stuck on {article} {subject} question"
        reply = "\n\n".join(steps)
        if omit_answer:
            reply += "\n\nCan you take it from there?"
        elif p.answer:
            reply += f"\n\nSo the answer is: {p.answer}"
        body = [
            f"Homework Help › {p.subject}",
            f"{asker} asked:\n{p.question} {rng.choice(ASKER_TAILS)}",
            f"{helper} replied:\n{reply}",
        ]
        body += [f"{third} replied:\nGood answer. One thing to add: {n}" for n in notes[:1]]
        body.append(f"{asker} replied:\n{rng.choice(THANKS)}")
        text = page(
            rng, site, "forum", title, body, chrome=rng.choice([0.4, 0.8]), with_byline=False
        )
        return text, f"https://{site.domain}/t/{slug(title)}/{rng.randint(1000, 99999)}"
    if style == 2:
        course, lec, ex = rng.choice(COURSES), rng.randint(2, 14), rng.randint(1, 9)
        title = f"{course}, Lecture {lec}: {p.subject}"
        body = [f"Example {lec}.{ex}. {p.title}", p.question, "Solution.", *steps]
        if p.answer and not omit_answer:
            body.append(f"Answer: {p.answer}")
        elif p.answer is None:
            body.append("∎")
        body += [f"Remark. {n}" for n in notes]
        body.append(
            f"Exercise {lec}.{ex + 1}. Work through the example again with numbers of your "
            "own choosing and check your result by substituting it back."
        )
        text = page(rng, site, "edu", title, body, chrome=rng.choice([0.2, 0.5]))
        return text, f"https://{site.domain}/courses/{slug(course)}/lecture-{lec:02d}.html"
    votes = rng.randint(3, 240)
    body = [
        p.question,
        f"asked {date_str(rng)} · viewed {rng.randint(40, 9000):,} times",
        rng.choice(["1 answer", "2 answers", "3 answers", "4 answers"]) + " · sorted by votes",
        f"Accepted answer · {votes} votes",
        *steps,
    ]
    if p.answer and not omit_answer:
        body.append(f"Final answer: {p.answer}")
    body += notes
    body.append("Add a comment")
    if rng.random() < 0.7:
        body.append("Related questions:\n" + "\n".join(rng.sample(RELATED_QUESTIONS, 4)))
    text = page(rng, site, "edu", p.title, body, chrome=rng.choice([0.3, 0.6]), with_byline=False)
    return text, f"https://{site.domain}/questions/{rng.randint(10000, 999999)}/{slug(p.title)}"


def reasoning_docs(rng: random.Random) -> list[tuple[str, str]]:
    """Every generator once, then parametric ones again (new numbers) up to the count."""
    repeatable = [g for g in GENERATORS if g.__name__ not in ONCE]
    extra = COUNTS["reasoning"] - len(GENERATORS)
    schedule = list(GENERATORS) + rng.sample(repeatable, extra)
    rng.shuffle(schedule)
    out = []
    for gen in schedule:
        problem = gen(rng)
        omit = problem.answer is not None and rng.random() < 0.1
        out.append(present(rng, problem, omit))
    return out


# ---------------------------------------------------------------------------------------------
# Boilerplate pages: what a crawler mostly brings back.
# ---------------------------------------------------------------------------------------------

CONSENT_SENTENCES = [
    "We and our {n} partners use cookies and similar technologies to store and access "
    "information on your device.",
    "Some of these are strictly necessary for the site to work, for example to remember what "
    "is in your basket.",
    "With your consent we also use them to measure how our pages are used and to show you "
    "adverts that are more relevant to you.",
    "You can accept all cookies, reject the ones that are not essential, or choose which "
    "purposes to allow.",
    "Your choice applies to this website only and will be stored for twelve months.",
    "You can withdraw your consent at any time via the link in the footer.",
    "Precise geolocation data and identification through device scanning may be used by some "
    "partners.",
    "Legitimate interest is relied upon by some vendors; you have the right to object.",
]
NOT_FOUND_LINES = [
    "Sorry, the page you are looking for does not exist or has been moved.",
    "We couldn't find that page. It may have been removed, renamed, or it never existed.",
    "Oops! Looks like this page went for a walk and didn't come back.",
    "The link you followed may be broken, or the page may have been removed.",
    "Hmm, we can't seem to find what you're looking for.",
]
CLICKBAIT = [
    "Residents of {town} are switching to this simple morning routine",
    "You won't believe what this old farmhouse looks like now",
    "The one kitchen gadget chefs say you should never buy",
    "Here's what happens when you drink water before every meal",
    "This retired teacher's garden is going viral for a surprising reason",
    "17 photos taken moments before something unexpected happened",
    "Why everyone in {town} is talking about this new savings account",
    "Experts reveal the simple trick to sleeping through the night",
    "She found a forgotten box in the attic, and it changed everything",
    "The surprising reason your houseplants keep dying",
    "New rule for drivers over 60 comes into force next month",
    "Do this before you throw away your old phone",
]
PRODUCT_ADJ = ["Stackable", "Bamboo", "Enamel", "Foldable", "Stainless", "Ceramic", "Cotton",
               "Oak-effect", "Insulated", "Compact", "Vintage-style", "Waterproof"]  # fmt: skip
PRODUCT_NOUN = ["storage jars (set of 3)", "chopping board", "mug", "garden kneeler",
                "lunch box", "tea towel", "bread bin", "plant pot", "flask", "picnic blanket",
                "spice rack", "watering can", "doormat", "laundry basket"]  # fmt: skip
TERMS_CLAUSES = [
    "By accessing or using the Service you agree to be bound by these Terms. If you do not "
    "agree to these Terms, do not use the Service.",
    "We may revise these Terms from time to time. The most current version will always be "
    "available on this page.",
    "You must be at least 16 years old to create an account.",
    "You are responsible for keeping your password confidential and for all activity that "
    "occurs under your account.",
    "All content on the Service, including text, graphics and logos, is the property of the "
    "Company or its licensors and is protected by copyright law.",
    "You may not copy, modify, distribute, sell or lease any part of the Service without our "
    "prior written permission.",
    "The Service is provided on an 'as is' and 'as available' basis without warranties of any "
    "kind.",
    "To the fullest extent permitted by law, the Company shall not be liable for any indirect, "
    "incidental or consequential damages.",
    "These Terms are governed by the laws of the jurisdiction in which the Company is registered.",
    "We may suspend or terminate your access at any time, without notice, for conduct that "
    "we believe violates these Terms.",
]
ARCHIVE_TAGS = ["walking", "baking", "local history", "gardening", "budget travel", "reviews",
                "family days out", "rainy day ideas", "cycling", "photography"]  # fmt: skip


def _site_and_url(rng: random.Random, family: str, path: str) -> tuple[Site, str]:
    site = make_site(rng, family)
    return site, f"https://{site.domain}/{path}"


def bp_cookie_wall(rng: random.Random) -> tuple[str, str]:
    site, url = _site_and_url(rng, rng.choice(["news", "misc", "shop"]), "")
    sentences = rng.sample(CONSENT_SENTENCES, rng.randint(2, 5))
    text = " ".join(sentences).format(n=rng.randint(80, 900))
    head = rng.choice(
        [
            "Before you continue",
            "We value your privacy",
            "Your privacy choices",
            f"{site.name} asks for your consent",
        ]
    )
    buttons = rng.choice(
        [
            "Accept all | Reject all | Manage options",
            "I agree | More options",
            "Accept & close | Customise",
        ]
    )
    blocks = [head, text, buttons]
    if rng.random() < 0.5:
        blocks.insert(0, nav_line(rng, site, "misc"))
    if rng.random() < 0.5:
        blocks.append("Strictly necessary (always on) · Performance · Functional · Targeting")
    return "\n\n".join(blocks), url


def bp_not_found(rng: random.Random) -> tuple[str, str]:
    family = rng.choice(["news", "shop", "travel", "recipe", "misc"])
    site, _ = _site_and_url(rng, family, "")
    url = f"https://{site.domain}/{slug(rng.choice(RELATED_TITLES))}"
    blocks = [rng.choice(["404", "Error 404", "404 - Page not found", "Page not found"])]
    blocks.append(rng.choice(NOT_FOUND_LINES))
    if rng.random() < 0.6:
        blocks.append("Try searching the site, or go back to the homepage.\nSearch: ____  Go")
    if rng.random() < 0.6:
        blocks.append("Popular pages:\n" + "\n".join(rng.sample(RELATED_TITLES, 4)))
    if rng.random() < 0.7:
        blocks.insert(0, nav_line(rng, site, family))
    blocks.append(footer(rng, site))
    return "\n\n".join(blocks), url


def bp_paywall(rng: random.Random) -> tuple[str, str]:
    topic = rng.choice(NEWS.topics)
    values = slots(rng)
    title = fill(topic.title, values)
    site = make_site(rng, "news")
    blocks = [
        nav_line(rng, site, "news"),
        title,
        byline(rng),
        fill(wording(rng, topic.paragraphs[0]), values),
    ]
    blocks.append(
        rng.choice(
            [
                "Subscribe to continue reading. Get unlimited digital access for {cur}1 for your "
                "first month, then {cur}{price} a month. Cancel any time.",
                "This article is for subscribers only. Already a subscriber? Log in.\nSubscribe "
                "now: {cur}{price} a month for the website, app and the daily e-paper.",
                "You have reached your limit of free articles this month. Support local "
                "journalism: "
                "subscribe from just {cur}{price} a month.",
            ]
        ).format_map(values)
    )
    if rng.random() < 0.6:
        blocks.append("Most read\n" + "\n".join(rng.sample(RELATED_TITLES, rng.randint(4, 7))))
    if rng.random() < 0.6:
        blocks.append(rng.choice(COOKIE_NOTES))
    blocks.append(footer(rng, site))
    return "\n\n".join(blocks), url_for(rng, site, title, "news")


LOGIN_FORMS = [
    "Username or email\nPassword\n[ ] Remember me\nLog in",
    "Email\nPassword\nSign in",
    "Email address\nPassword (at least 8 characters)\n[x] Keep me signed in\nContinue",
    "Phone number or email\nNext",
    "Member number\nPassword\nLog in securely",
]
LOGIN_REASONS = [
    "post replies and start new threads", "see your saved items", "download worksheets",
    "track your orders", "join the discussion", "read the full archive", "manage your bookings",
]  # fmt: skip


def bp_login_wall(rng: random.Random) -> tuple[str, str]:
    family = rng.choice(["forum", "edu", "shop"])
    site, url = _site_and_url(rng, family, rng.choice(["login", "account/signin", "members/"]))
    blocks = [
        rng.choice(
            [
                "You must be logged in to view this page.",
                f"Sign in to {site.name}",
                "Members only",
                "Please log in to see this content.",
                f"Welcome back to {site.name}",
                "This page is only available to registered users.",
            ]
        ),
        f"Log in to {rng.choice(LOGIN_REASONS)}.",
        rng.choice(LOGIN_FORMS),
        rng.choice(
            [
                "Forgot your password?",
                "Lost your password? Reset it here.",
                "Trouble signing in? Contact the help desk.",
                "Forgotten your details? We can send you a reset link.",
            ]
        ),
        rng.choice(
            [
                "Not a member yet? Register for free, it only takes a minute.",
                f"New to {site.name}? Create an account.",
                f"Join {rng.randint(2, 80)},{rng.randint(100, 999)} members today.",
                "No account? Sign up with your email address.",
            ]
        ),
    ]
    if rng.random() < 0.6:
        blocks.insert(0, nav_line(rng, site, family))
    blocks.append(footer(rng, site))
    return "\n\n".join(blocks), url


def bp_homepage(rng: random.Random) -> tuple[str, str]:
    family = rng.choice(["news", "travel", "recipe", "review", "event"])
    site, url = _site_and_url(rng, family, "")
    values = slots(rng)
    blocks = [
        nav_line(rng, site, family),
        rng.choice(["Latest", "Top stories", "Most read", "Trending now", "Editor's picks"]),
    ]
    heads = rng.sample(RELATED_TITLES, rng.randint(6, 12))
    if rng.random() < 0.5:
        heads.append(fill(rng.choice(CLICKBAIT), values))
    blocks.append("\n".join(f"{h}\n{rng.randint(1, 23)} hours ago" for h in heads))
    if rng.random() < 0.5:
        blocks.append(rng.choice(COOKIE_NOTES))
    blocks.append(footer(rng, site))
    return "\n\n".join(blocks), url


def bp_ads(rng: random.Random) -> tuple[str, str]:
    values = slots(rng)
    site, url = _site_and_url(
        rng, rng.choice(["misc", "news"]), f"recommended?page={rng.randint(2, 9)}"
    )
    heads = [fill(h, values) for h in rng.sample(CLICKBAIT, rng.randint(4, 7))]
    sponsor = make_site(rng, "misc").name
    lines = [f"{h}\nSponsored · {sponsor}" if rng.random() < 0.5 else h for h in heads]
    blocks = [
        rng.choice(["Advertisement", "You may also like", "Recommended for you", "Around the web"]),
        "\n\n".join(lines),
    ]
    if rng.random() < 0.5:
        blocks.append("Ad · Why this ad? · Report this ad")
    if rng.random() < 0.4:
        blocks.insert(0, nav_line(rng, site, "misc"))
    return "\n\n".join(blocks), url


def bp_products(rng: random.Random) -> tuple[str, str]:
    site, _ = _site_and_url(rng, "shop", "")
    category = rng.choice(
        [
            "Kitchen storage",
            "Garden essentials",
            "Gifts under 20",
            "Home & living",
            "New arrivals",
            "Clearance",
        ]
    )
    url = f"https://{site.domain}/c/{slug(category)}?sort=popular"
    cur = rng.choice(["$", "£", "€"])
    items = []
    for _ in range(rng.randint(6, 14)):
        name = f"{rng.choice(PRODUCT_ADJ)} {rng.choice(PRODUCT_NOUN)}"
        price = f"{cur}{rng.randint(3, 60)}.{rng.choice(['99', '49', '00', '95'])}"
        stars = "★" * (r := rng.randint(3, 5)) + "☆" * (5 - r)
        extra = rng.choice(["", " · Only 2 left!", " · Sale", " · New", " · Free delivery"])
        items.append(f"{name}\n{price}  {stars} ({rng.randint(2, 480)}){extra}\nAdd to basket")
    n = rng.randint(len(items) + 5, 300)
    blocks = [
        nav_line(rng, site, "shop"),
        category,
        f"Showing 1–{len(items)} of {n} results   Sort by: Popularity",
        "\n\n".join(items),
        f"Free delivery on orders over {cur}{rng.choice([25, 30, 40, 50])}. Easy 30-day returns.",
    ]
    if rng.random() < 0.5:
        blocks.append(footer(rng, site))
    return "\n\n".join(blocks), url


def bp_terms(rng: random.Random) -> tuple[str, str]:
    site, url = _site_and_url(rng, rng.choice(["misc", "shop", "forum"]), "legal/terms")
    clauses = rng.sample(TERMS_CLAUSES, rng.randint(4, 8))
    numbered = [f"{i}. {c}" for i, c in enumerate(clauses, start=rng.choice([1, 3, 7]))]
    blocks = [
        rng.choice(["Terms of Service", "Terms and Conditions", "Terms of Use"]),
        f"Last updated: {date_str(rng)}",
        *numbered,
    ]
    if rng.random() < 0.5:
        blocks.append(footer(rng, site))
    return "\n\n".join(blocks), url


def bp_newsletter(rng: random.Random) -> tuple[str, str]:
    family = rng.choice(["recipe", "travel", "review", "news"])
    site, url = _site_and_url(rng, family, "newsletter")
    what = {
        "recipe": "new recipes",
        "travel": "travel stories and tips",
        "review": "our latest reviews and deals",
        "news": "the day's top stories",
    }[family]
    blocks = [
        rng.choice(["Subscribe to our newsletter", "Never miss a post", "Join our mailing list"]),
        f"Get {what} straight to your inbox, "
        f"{rng.choice(['every week', 'every Friday', 'daily'])}.",
        "Email address\nSubscribe",
        rng.choice(
            [
                "We will never share your email. Unsubscribe at any time.",
                "By subscribing you agree to our privacy policy.",
                f"Join {rng.randint(2, 90)},{rng.randint(100, 999)} other readers.",
            ]
        ),
    ]
    if rng.random() < 0.6:
        blocks.insert(0, nav_line(rng, site, family))
    if rng.random() < 0.5:
        blocks.append(footer(rng, site))
    return "\n\n".join(blocks), url


def bp_archive(rng: random.Random) -> tuple[str, str]:
    tag = rng.choice(ARCHIVE_TAGS)
    family = rng.choice(["travel", "recipe", "history", "review"])
    site, _ = _site_and_url(rng, family, "")
    page_no, pages = rng.randint(2, 9), rng.randint(10, 40)
    url = f"https://{site.domain}/tag/{slug(tag)}/page/{page_no}/"
    posts = rng.sample(RELATED_TITLES, rng.randint(4, 8))
    entries = [f"{t}\n{date_str(rng)} · {rng.randint(0, 40)} comments\nRead more »" for t in posts]
    blocks = [
        nav_line(rng, site, family),
        rng.choice([f"Posts tagged '{tag}'", f"Category: {tag.title()}", f"Archive: {tag}"]),
        *entries,
        f"Page {page_no} of {pages}   « Newer posts | Older posts »",
    ]
    if rng.random() < 0.5:
        blocks.append(footer(rng, site))
    return "\n\n".join(blocks), url


def bp_app_shell(rng: random.Random) -> tuple[str, str]:
    site, url = _site_and_url(rng, rng.choice(["misc", "shop", "event"]), "app/")
    tagline = rng.choice(
        [
            "tickets, listings and more",
            "your account, your orders",
            "plan your week",
            "everything for the home",
            "members' area",
        ]
    )
    blocks = [
        f"{site.name}: {tagline}",
        rng.choice(["Loading...", "Please wait while we load your content.", "Starting up"]),
        rng.choice(
            [
                "You need to enable JavaScript to run this app.",
                "Your browser is out of date. Please update your browser for the best experience "
                "on this site.",
                "This site works best with JavaScript enabled. Please enable it in your browser "
                "settings and reload the page.",
            ]
        ),
    ]
    if rng.random() < 0.6:
        wait, code = rng.randint(5, 30), rng.randint(100, 999)
        support = rng.choice(
            ["contact support.", "visit the help page.", f"quote error code {code} to support."]
        )
        blocks.append(
            f"If nothing appears after {wait} seconds, check your connection or {support}"
        )
    blocks.append(footer(rng, site))
    if rng.random() < 0.5:
        blocks.append(rng.choice(COOKIE_NOTES))
    return "\n\n".join(blocks), url


BOILERPLATE = [bp_cookie_wall, bp_not_found, bp_paywall, bp_login_wall, bp_homepage, bp_ads,
               bp_products, bp_terms, bp_newsletter, bp_archive, bp_app_shell]  # fmt: skip


def boilerplate_docs(rng: random.Random) -> list[tuple[str, str]]:
    return [BOILERPLATE[i % len(BOILERPLATE)](rng) for i in range(COUNTS["boilerplate"])]


# ---------------------------------------------------------------------------------------------
# Pages in other languages, written for this corpus. Numbers in the worked problems are still
# computed, so those answers are right too.
# ---------------------------------------------------------------------------------------------


def decimal_comma(x: float, nd: int = 2) -> str:
    """German/Spanish/Dutch style: 6.719,58."""
    return num(x, nd).replace(",", "_").replace(".", ",").replace("_", ".")


def non_english_docs() -> list[tuple[str, str, str]]:
    """(lang, url, text) for every non-English page; fixed text, so no RNG needed."""
    capital, rate, years = 5000, 3, 10
    amount = capital * (1 + rate / 100) ** years
    adults, kids, p_adult, p_kid = 134, 86, 12, 7
    seats, takings = adults + kids, adults * p_adult + kids * p_kid
    d_out, v_out, v_back = 120, 60, 40
    avg = 2 * d_out / (d_out / v_out + d_out / v_back)
    coat, first, second = 80, 25, 10
    after = coat * (1 - first / 100) * (1 - second / 100)
    dist, va, vb = 360, 70, 50
    chickens, rabbits = 17, 13
    heads, legs = chickens + rabbits, 2 * chickens + 4 * rabbits
    return [
        (
            "de",
            "https://www.lindenfelder-anzeiger.de/lokales/stadtbibliothek-wieder-offen",
            "Startseite | Lokales | Sport | Kultur | Wetter\n\n"
            "Stadtbibliothek Lindenfeld öffnet nach Umbau wieder\n\n"
            "Nach fast einem Jahr Bauzeit hat die Stadtbibliothek in Lindenfeld am Samstag "
            "wieder ihre Türen geöffnet. Schon vor der offiziellen Eröffnung um zehn Uhr "
            "warteten zahlreiche Besucherinnen und Besucher vor dem Eingang am Marktplatz.\n\n"
            "Der alte Lesesaal wurde sorgfältig renoviert, die Kinderabteilung ist in einen "
            "hellen Anbau mit Blick auf den Garten umgezogen. Neu ist außerdem ein kleines Café "
            "im Erdgeschoss, das von einem Verein ehrenamtlich betrieben wird.\n\n"
            "„Wir haben unsere Stammgäste sehr vermisst“, sagte die Leiterin der Bibliothek bei "
            "der Eröffnung. Künftig ist die Bibliothek auch am Sonntagnachmittag geöffnet.\n\n"
            "Teilen | Drucken | Kommentare (4)",
        ),
        (
            "de",
            "https://mathe-schritt-fuer-schritt.de/aufgaben/zinseszins",
            "Mathe verstehen › Aufgaben mit Lösung\n\n"
            "Aufgabe: Zinseszins\n\n"
            f"Frau K. legt {decimal_comma(capital, 0)} Euro zu einem Zinssatz von {rate} % pro "
            "Jahr an. Die Zinsen werden jedes Jahr gutgeschrieben und mitverzinst. Wie hoch ist "
            f"das Guthaben nach {years} Jahren?\n\n"
            "Lösung: Bei jährlicher Verzinsung wird das Kapital jedes Jahr mit dem Faktor "
            f"{decimal_comma(1 + rate / 100)} multipliziert. Nach {years} Jahren gilt also "
            f"K = {decimal_comma(capital, 0)} · {decimal_comma(1 + rate / 100)}^{years}. Der "
            f"Faktor beträgt ungefähr {decimal_comma((1 + rate / 100) ** years, 4)}, damit "
            f"ergibt sich K ≈ {decimal_comma(amount)} Euro.\n\n"
            "Zum Vergleich: Bei einfacher Verzinsung kämen jedes Jahr genau "
            f"{decimal_comma(capital * rate / 100, 0)} Euro hinzu, und das Guthaben wäre nur "
            f"{decimal_comma(capital * (1 + rate * years / 100), 0)} Euro.\n\n"
            f"Antwort: Nach {years} Jahren beträgt das Guthaben etwa {decimal_comma(amount)} "
            "Euro.",
        ),
        (
            "de",
            "https://www.gartenwelt-versand.de/",
            "Wir verwenden Cookies\n\n"
            "Wir nutzen Cookies und ähnliche Technologien, um unsere Website für Sie optimal zu "
            "gestalten und fortlaufend zu verbessern. Mit einem Klick auf „Alle akzeptieren“ "
            "stimmen Sie der Verwendung zu. Ihre Einwilligung können Sie jederzeit in den "
            "Einstellungen widerrufen.\n\n"
            "Alle akzeptieren | Nur notwendige | Einstellungen\n\n"
            "Kostenloser Versand ab 40 Euro Bestellwert. Rückgabe innerhalb von 30 Tagen.\n\n"
            "Impressum | Datenschutz | AGB | Kontakt",
        ),
        (
            "fr",
            "https://www.cuisine-de-mamie.fr/recettes/desserts/tarte-aux-pommes",
            "Accueil › Recettes › Desserts\n\n"
            "Tarte aux pommes de ma grand-mère\n\n"
            "Cette tarte est celle que ma grand-mère préparait chaque dimanche d'automne. Elle "
            "est simple, peu sucrée et se prépare en moins d'une heure.\n\n"
            "Ingrédients (pour 6 personnes) : une pâte brisée, 5 pommes, 40 g de beurre, "
            "3 cuillères à soupe de sucre, une pincée de cannelle.\n\n"
            "Préparation : Préchauffez le four à 180 °C. Étalez la pâte dans un moule et piquez "
            "le fond avec une fourchette. Épluchez les pommes, coupez-les en fines lamelles et "
            "disposez-les en rosace. Parsemez de sucre, de cannelle et de petits morceaux de "
            "beurre. Faites cuire 35 minutes, jusqu'à ce que les pommes soient bien dorées.\n\n"
            "Bon appétit ! N'hésitez pas à laisser un commentaire.",
        ),
        (
            "fr",
            "https://maths-en-ligne.fr/probabilites/deux-des",
            "Exercice corrigé : somme de deux dés\n\n"
            "On lance deux dés équilibrés à six faces. Quelle est la probabilité d'obtenir une "
            "somme égale à 7 ? Et une somme supérieure ou égale à 10 ?\n\n"
            "Solution : on distingue les deux dés, ce qui donne 6 × 6 = 36 issues "
            "équiprobables. Les issues dont la somme vaut 7 sont (1, 6), (2, 5), (3, 4), "
            "(4, 3), (5, 2) et (6, 1), soit 6 issues. La probabilité cherchée est donc "
            "6/36 = 1/6.\n\n"
            "Pour une somme au moins égale à 10, on compte (4, 6), (5, 5), (6, 4), (5, 6), "
            "(6, 5) et (6, 6), soit encore 6 issues, donc une probabilité de 1/6.\n\n"
            "Réponse : 1/6 dans les deux cas.",
        ),
        (
            "fr",
            "https://www.journal-du-littoral.fr/article-supprime",
            "Oups ! Page introuvable\n\n"
            "La page que vous recherchez n'existe pas ou a été déplacée. Vérifiez l'adresse "
            "saisie ou revenez à la page d'accueil.\n\n"
            "Vous pouvez aussi utiliser notre moteur de recherche ou consulter nos rubriques les "
            "plus populaires : Actualités, Culture, Sports, Météo.\n\n"
            "Mentions légales | Politique de confidentialité | Gestion des cookies | Nous "
            "contacter",
        ),
        (
            "es",
            "https://www.mochila-y-mapa.es/destinos/pueblo-costero",
            "Inicio | Destinos | Europa | Consejos | Sobre mí\n\n"
            "Un fin de semana en un pueblo de la costa\n\n"
            "Llegamos al pueblo un viernes por la tarde, justo cuando los barcos de pesca "
            "volvían al puerto. Nos alojamos en una pequeña pensión familiar con vistas al mar, "
            "a pocos pasos de la plaza mayor.\n\n"
            "El sábado caminamos por el sendero que bordea los acantilados hasta una cala "
            "escondida. El agua estaba fría, pero muy transparente, y apenas había gente.\n\n"
            "Por la noche cenamos pescado a la plancha en un restaurante del puerto. Sin duda "
            "volveremos el año que viene.\n\n"
            "Compartir en redes sociales",
        ),
        (
            "es",
            "https://matematicas-paso-a-paso.es/algebra/sistemas-de-ecuaciones",
            "Problema resuelto: sistema de dos ecuaciones\n\n"
            f"En una función de teatro se vendieron {seats} entradas y se recaudaron "
            f"{decimal_comma(takings, 0)} euros. La entrada de adulto cuesta {p_adult} euros y "
            f"la infantil {p_kid} euros. ¿Cuántas entradas de cada tipo se vendieron?\n\n"
            "Solución: llamamos x al número de entradas de adulto e y al de entradas "
            f"infantiles. Entonces x + y = {seats} y {p_adult}x + {p_kid}y = {takings}. Si "
            f"multiplicamos la primera ecuación por {p_kid} y la restamos de la segunda, "
            f"obtenemos {p_adult - p_kid}x = {takings - p_kid * seats}, es decir, "
            f"x = {adults}. Por lo tanto, y = {seats} − {adults} = {kids}.\n\n"
            f"Comprobación: {p_adult} · {adults} + {p_kid} · {kids} = {takings}.\n\n"
            f"Respuesta: se vendieron {adults} entradas de adulto y {kids} infantiles.",
        ),
        (
            "es",
            "https://www.tienda-hogar-y-jardin.es/",
            "Este sitio web utiliza cookies propias y de terceros para mejorar nuestros "
            "servicios y mostrarle publicidad relacionada con sus preferencias mediante el "
            "análisis de sus hábitos de navegación. Si continúa navegando, consideramos que "
            "acepta su uso. Puede cambiar la configuración u obtener más información en nuestra "
            "política de cookies.\n\n"
            "Aceptar | Rechazar | Configurar\n\n"
            "Aviso legal | Política de privacidad | Contacto\n\n"
            "Suscríbase a nuestro boletín y reciba nuestras ofertas cada semana.",
        ),
        (
            "it",
            "https://www.gazzetta-della-valle.it/eventi/sagra-della-castagna",
            "Home | Cronaca | Sport | Cultura | Eventi\n\n"
            "Torna la sagra della castagna nel borgo di Valfiorita\n\n"
            "Dopo due anni di pausa, torna questo fine settimana la tradizionale sagra della "
            "castagna nel piccolo borgo di Valfiorita. Le vie del centro storico si "
            "riempiranno di bancarelle, musica popolare e profumo di caldarroste.\n\n"
            "Gli organizzatori prevedono migliaia di visitatori e hanno predisposto un servizio "
            "di navetta gratuito dal parcheggio a valle. Sabato sera è previsto un concerto in "
            "piazza, mentre domenica mattina i bambini potranno partecipare a un laboratorio di "
            "cucina.\n\n"
            "L'ingresso è libero. In caso di pioggia, alcune attività si svolgeranno nella "
            "palestra comunale.",
        ),
        (
            "it",
            "https://www.fisica-facile.it/esercizi/velocita-media",
            "Esercizio svolto: la velocità media\n\n"
            f"Un'automobile percorre {d_out} km all'andata alla velocità costante di {v_out} km/h "
            f"e torna indietro sulla stessa strada a {v_back} km/h. Qual è la velocità media "
            "sull'intero percorso?\n\n"
            f"Soluzione: non basta fare la media delle due velocità, che darebbe "
            f"{(v_out + v_back) // 2} km/h. La velocità media è lo spazio totale diviso per il "
            f"tempo totale. All'andata servono {d_out} : {v_out} = {d_out // v_out} ore, al "
            f"ritorno {d_out} : {v_back} = {d_out // v_back} ore, in tutto "
            f"{d_out // v_out + d_out // v_back} ore per {2 * d_out} km.\n\n"
            f"Risposta: la velocità media è {2 * d_out} : {d_out // v_out + d_out // v_back} = "
            f"{num(avg)} km/h.",
        ),
        (
            "pt",
            "https://www.memorias-da-aldeia.pt/pessoas/a-professora",
            "A professora que construiu uma escola\n\n"
            "Quando chegou à aldeia, em 1925, não havia escola. As aulas decorriam num antigo "
            "celeiro, e muitas crianças nunca tinham aprendido a ler.\n\n"
            "A professora angariou fundos de porta em porta e convenceu um proprietário a doar "
            "um terreno junto à igreja. A nova escola abriu as portas quatro anos depois.\n\n"
            "Os antigos alunos recordam aulas exigentes mas cheias de carinho, passeios pela "
            "natureza às sextas-feiras e uma pequena biblioteca guardada num armário. Hoje o "
            "edifício é a sede da junta de freguesia, e o retrato da professora está pendurado na "
            "sala principal.",
        ),
        (
            "pt",
            "https://www.diario-do-planalto.pt/entrar",
            "Entrar | Criar conta\n\n"
            "Para continuar a ler este artigo, inicie sessão ou crie uma conta gratuita. Os "
            "assinantes têm acesso ilimitado a todas as notícias, à edição digital e à nossa "
            "newsletter diária.\n\n"
            "Endereço de e-mail\nPalavra-passe\nEsqueceu-se da palavra-passe?\n\n"
            "Ao continuar, aceita os Termos de Utilização e a Política de Privacidade.\n\n"
            "Assine já: o primeiro mês custa apenas um euro.",
        ),
        (
            "nl",
            "https://www.fietsroutes-langs-het-water.nl/routes/oosterveld-molenwaard",
            "Fietsen langs de rivier: een dagtocht van Oosterveld naar Molenwaard\n\n"
            "De route volgt bijna de hele dag de dijk langs de rivier en is ongeveer vijftig "
            "kilometer lang. Onderweg kom je langs oude boerderijen, een draaiende windmolen en "
            "een klein veerpontje dat je voor een paar euro naar de overkant brengt.\n\n"
            "Halverwege kun je stoppen bij een theeschenkerij met zelfgebakken appeltaart. Let "
            "op: bij harde wind is het stuk door de open polder zwaar, dus houd daar rekening "
            "mee als je terugfietst.\n\n"
            "Deel dit bericht | Reacties (7)",
        ),
        (
            "nl",
            "https://www.rekenen-met-plezier.nl/procenten/korting-op-korting",
            "Rekenvoorbeeld: korting op korting\n\n"
            f"Een jas kost {coat} euro. De winkel geeft eerst {first}% korting en daarna nog "
            f"eens {second}% korting op de nieuwe prijs. Is dat hetzelfde als "
            f"{first + second}% korting?\n\n"
            f"Uitwerking: na de eerste korting betaal je {100 - first}% van {coat} euro, dus "
            f"{decimal_comma(coat * (1 - first / 100))} euro. De tweede korting gaat over dat "
            f"nieuwe bedrag: {100 - second}% daarvan is {decimal_comma(after)} euro.\n\n"
            f"In totaal betaal je dus {decimal_comma(after)} euro, een korting van "
            f"{decimal_comma(100 - after / coat * 100, 1)}%. Dat is minder dan "
            f"{first + second}%, omdat de tweede korting over een lager bedrag wordt berekend.",
        ),
        (
            "ru",
            "https://www.gorodskie-novosti.ru/news/novyj-park",
            "Главная | Новости | Город | Спорт | Погода\n\n"
            "В Заречье открылся новый парк\n\n"
            "В субботу в районе Заречье торжественно открыли новый городской парк. На месте "
            "бывшего пустыря появились пешеходные дорожки, детская площадка, спортивное поле и "
            "небольшой пруд с утками.\n\n"
            "По словам организаторов, в благоустройстве участвовали более двухсот жителей "
            "района: они сажали деревья, красили скамейки и помогали убирать мусор. Вечером в "
            "парке прошёл концерт местного оркестра.\n\n"
            "Парк открыт ежедневно с семи утра до одиннадцати вечера. Вход свободный.",
        ),
        (
            "ru",
            "https://www.zadachi-s-resheniyami.ru/dvizhenie/vstrechnoe",
            "Задача на встречное движение\n\n"
            f"Два поезда одновременно выходят навстречу друг другу из двух городов, расстояние "
            f"между которыми {dist} км. Скорость первого поезда {va} км/ч, второго — {vb} км/ч. "
            "Через сколько часов они встретятся?\n\n"
            "Решение. Поезда движутся навстречу друг другу, поэтому скорость сближения равна "
            f"сумме их скоростей: {va} + {vb} = {va + vb} км/ч. Время до встречи равно "
            f"расстоянию, делённому на скорость сближения: {dist} : {va + vb} = "
            f"{dist // (va + vb)} ч. За это время первый поезд проедет "
            f"{va * dist // (va + vb)} км, а второй — {vb * dist // (va + vb)} км; в сумме "
            f"{dist} км, что подтверждает ответ.\n\n"
            f"Ответ: поезда встретятся через {dist // (va + vb)} часа.",
        ),
        (
            "zh",
            "https://www.laojie-meishi.cn/blog/zhoumo-zaocan",
            "首页 | 美食 | 旅行 | 关于我\n\n"
            "周末去老街吃早餐\n\n"
            "这个周末我们起了个大早，去城南的老街吃早餐。街口那家开了三十多年的小店门口已经排起了"
            "长队，老板娘一边包馄饨一边和熟客聊天。我们点了两碗鲜肉馄饨、一笼小笼包和一杯热豆浆，"
            "味道和小时候一模一样。\n\n"
            "吃完以后，我们沿着河边慢慢散步，看见很多老人在树下下棋、打太极。虽然只是一个普通的"
            "早晨，却让人觉得特别温暖。下次有机会，我还想来尝尝他们家的葱油饼。\n\n"
            "分享到 | 评论（12）",
        ),
        (
            "zh",
            "https://www.shuxue-jiaocheng.cn/lianxi/jitu-tonglong",
            "例题：鸡兔同笼\n\n"
            f"鸡兔同笼，共有{heads}个头，{legs}只脚。问鸡和兔各有多少只？\n\n"
            f"解：假设笼子里全是鸡，那么应该有 {heads} × 2 = {2 * heads} 只脚，比实际少了 "
            f"{legs} − {2 * heads} = {legs - 2 * heads} 只。每把一只鸡换成一只兔，脚的数量就"
            f"增加 2 只，所以兔的数量是 {legs - 2 * heads} ÷ 2 = {rabbits} 只，鸡的数量是 "
            f"{heads} − {rabbits} = {chickens} 只。\n\n"
            f"检验：{chickens} × 2 + {rabbits} × 4 = {2 * chickens} + {4 * rabbits} = {legs}，"
            "正确。\n\n"
            f"答：鸡有{chickens}只，兔有{rabbits}只。",
        ),
        (
            "ja",
            "https://www.ekimae-shotengai.jp/news/natsumatsuri",
            "ホーム | お知らせ | イベント | アクセス\n\n"
            "夏祭りのお知らせ\n\n"
            "今年も八月の第一土曜日に、駅前商店街で恒例の夏祭りを開催します。当日は午後三時から"
            "夜九時まで、屋台や盆踊り、子ども向けのゲームコーナーなど、さまざまな催しを予定して"
            "います。夜七時半からは、地元の太鼓グループによる演奏も行われます。\n\n"
            "会場周辺は混雑が予想されますので、できるだけ公共交通機関をご利用ください。雨天の場合"
            "は翌日に延期します。皆さまのご来場を心よりお待ちしております。",
        ),
        (
            "ja",
            "https://www.machi-shimbun.jp/login",
            "ログイン | 新規会員登録\n\n"
            "この記事の続きを読むには、ログインまたは無料会員登録が必要です。会員になると、すべて"
            "の記事を読めるほか、毎朝ニュースレターをお届けします。\n\n"
            "メールアドレス\nパスワード\nパスワードをお忘れの方はこちら\n\n"
            "ログインすることで、利用規約およびプライバシーポリシーに同意したものとみなされます。"
            "\n\n当サイトでは、サービス向上のためにクッキーを使用しています。",
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Assembly.
# ---------------------------------------------------------------------------------------------


def build() -> list[dict[str, str]]:
    """All documents, shuffled so ids say nothing about kind; one RNG per kind keeps an edit
    to one kind from reshuffling the others."""
    rows: list[tuple[str, str, str, str]] = []  # kind, lang, text, url
    for text, url in reasoning_docs(random.Random(f"{SEED}-reasoning")):
        rows.append(("reasoning", "en", text, url))
    for text, url in narrative_docs(random.Random(f"{SEED}-narrative")):
        rows.append(("narrative", "en", text, url))
    for text, url in boilerplate_docs(random.Random(f"{SEED}-boilerplate")):
        rows.append(("boilerplate", "en", text, url))
    for lang, url, text in non_english_docs():
        rows.append(("non_english", lang, text, url))
    for kind, n in COUNTS.items():
        assert sum(r[0] == kind for r in rows) == n, kind
    random.Random(f"{SEED}-order").shuffle(rows)
    texts = [r[2] for r in rows]
    assert len(set(texts)) == len(texts), "duplicate document text"
    assert max(map(len, texts)) <= MAX_CHARS, "document too long"
    return [
        {"id": f"doc-{i:04d}", "url": url, "text": text, "kind": kind, "lang": lang}
        for i, (kind, lang, text, url) in enumerate(rows, start=1)
    ]


def write(docs: list[dict[str, str]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="\n") as f:
        for doc in docs:
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output JSONL path")
    args = parser.parse_args(argv)
    docs = build()
    write(docs, args.out)
    print(f"wrote {len(docs)} documents to {args.out}")


if __name__ == "__main__":
    main()
