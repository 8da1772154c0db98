"""Invented web documents whose funnel outcome is drawn with the paper's probabilities.

The benchmark needs the NaturalReasoning funnel's shape, not real pages: 3.68% of pages
are not English (the fastText agent drops them, no LLM call), 90.24% are rejected by the
small model's one-token "No", 0.44% get a zero quality score, 0.19% get a question whose
last step lacks `\\boxed{}`, and 5.45% succeed (the paper's Table 2 on 25M DCLM pages).
Each row's outcome is drawn from one seeded RNG. English pages carry their outcome as a
catalogue code ("Catalogue reference for this page: NRB-CLSNO-000042.") that the
simulator's rules file (`rules.yaml`) matches, so the SIMULATED models answer No, a zero
score, an unboxed answer or a boxed one. Non-English pages are real German, French and
Spanish prose written for this benchmark, so the language agent itself rejects them.

Every sentence here was written for this file; nothing is scraped. Page length is drawn
uniformly from 1,000 to 3,000 characters, so prompts are ~250-750 simulator tokens.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

# (outcome, probability, code in the page): the paper's filtering statistics.
OUTCOMES: tuple[tuple[str, float, str | None], ...] = (
    ("filter_by_en", 0.0368, None),
    ("filter_by_classifier", 0.9024, "CLSNO"),
    ("filter_by_score", 0.0044, "SCORE0"),
    ("filter_by_no_boxed_answer", 0.0019, "NOBOX"),
    ("ok", 0.0545, "PASS"),
)

_ENGLISH = """
A train leaves the station at {a} kilometres per hour and a second one follows {b} minutes later.
To find when the second train catches up, we set the two distances equal and solve for time.
The chance of drawing two red balls from an urn with {a} red and {b} blue balls is computed below.
Many readers asked how compound interest grows when the rate is {c} percent per year.
We start from the definition of the derivative and apply it to the square of x.
The proof proceeds by induction on the number of vertices in the graph.
Suppose the demand curve is linear and the price elasticity at the midpoint is {c} tenths.
The museum opens at nine in the morning and closes at six in the evening, except on holidays.
Our shop ships orders within {a} working days to most European countries.
The recipe calls for {a} grams of flour, two eggs and a pinch of salt.
Subscribe to the newsletter to receive weekly updates about the community garden.
The council will discuss the new bicycle lanes at its meeting next Tuesday.
The author argues that the decline of the river trade began long before the railway arrived.
In the second half the home team scored {a} goals and secured their place in the final.
If the resistor carries {a} milliamperes at {b} volts, Ohm's law gives its resistance directly.
The energy stored in a spring compressed by {c} centimetres depends on the square of that distance.
Consider a firm that sells {a} units at a price of {b} euros and faces a fixed cost each month.
We compare the two estimates and notice that the second one is smaller by a factor of {c}.
The hiking trail climbs about {a} metres over the first {b} kilometres and then levels out.
Each chapter ends with exercises, and the solutions are collected at the back of the book.
Photographs from the festival are available in the gallery section of this website.
Hence the expected number of trials before the first success equals one over the probability.
Therefore the remainder of the division is {c}, which we can check by multiplying back.
The weather service expects light rain in the afternoon and clearer skies by the weekend.
Volunteers cleaned the beach on Saturday and collected {a} bags of plastic waste.
The lecture explains why the angles of a triangle always add up to one hundred and eighty degrees.
A careful reader will notice that the argument assumes the sequence is bounded.
The cost of the new library was shared between the city and a private foundation.
Using conservation of momentum, the velocity after the collision follows in one line.
The table lists the average monthly temperatures recorded over the past {b} years.
Students often confuse the median with the mean when the data are skewed.
This page collects frequently asked questions about returns, refunds and delivery times.
The committee published its report after {a} months of interviews and site visits.
To balance the chemical equation we count the atoms of each element on both sides.
The bridge was completed in the spring, three years later than first planned.
An investor who buys {a} shares at {b} dollars and sells them a year later earns a simple return.
The survey of {a} households found that most families cook at home on weekdays.
We then substitute the value of y into the first equation and simplify the fraction.
Readers can leave comments below; offensive messages will be removed by the moderators.
Our team answers support requests from Monday to Friday between eight and five.
The speed of sound in air rises by roughly {c} tenths of a metre per second for every degree.
Finally, the area under the curve between zero and {c} is obtained by integration.
The orchestra will perform two symphonies and a new piece by a young local composer.
Gardeners should water young trees deeply once a week during dry summer months.
"""

_GERMAN = """
Die Stadtbibliothek bleibt wegen Renovierungsarbeiten bis Ende des Monats geschlossen.
Wir bitten alle Besucher um Verständnis und empfehlen die Zweigstelle am Marktplatz.
Der Verein sucht noch freiwillige Helfer für das Sommerfest im Park.
Wer einen Kuchen backen möchte, meldet sich bitte bis Freitag bei der Vorsitzenden.
Die Wanderung führt durch den Wald bis zum alten Aussichtsturm über dem Tal.
Bei schlechtem Wetter fällt der Ausflug aus, und wir treffen uns stattdessen im Gemeindehaus.
Unser Geschäft liefert Bestellungen innerhalb von drei Werktagen in ganz Deutschland aus.
Die Rücksendung ist kostenlos, wenn die Ware ungetragen und in der Originalverpackung ist.
Der Gemeinderat hat beschlossen, die Straßenbeleuchtung auf sparsame Lampen umzustellen.
Die Kinder der Grundschule haben im Kunstunterricht Bilder für die Ausstellung gemalt.
"""

_FRENCH = """
La mairie organise une réunion publique sur le nouveau plan de circulation du centre-ville.
Les habitants sont invités à donner leur avis avant la fin du mois prochain.
Notre boulangerie propose chaque matin du pain frais et des croissants faits maison.
Le marché du samedi accueille des producteurs locaux de fromage, de fruits et de légumes.
La randonnée commence au pied de la colline et se termine près du vieux moulin.
En cas de pluie, la visite guidée du château est remplacée par une conférence.
Les inscriptions à l'école de musique sont ouvertes jusqu'au quinze septembre.
Le club de lecture se retrouve tous les jeudis soir dans la salle municipale.
Les commandes passées avant midi sont expédiées le jour même, sauf le dimanche.
Le festival de cinéma présente cette année des films venus de plus de vingt pays.
"""

_SPANISH = """
El ayuntamiento ha abierto el plazo para solicitar plazas en los campamentos de verano.
Las familias interesadas deben presentar la documentación antes del final de mayo.
Nuestra tienda envía los pedidos en un plazo de dos a cuatro días laborables.
La ruta de senderismo recorre el valle y termina junto a la antigua ermita del pueblo.
Si llueve, la excursión se aplaza hasta el domingo siguiente a la misma hora.
La biblioteca municipal amplía su horario durante la temporada de exámenes.
El mercado de los sábados reúne a productores de aceite, queso y verduras de la comarca.
El coro del barrio busca nuevas voces para el concierto de Navidad.
Los vecinos pueden dejar sus sugerencias en el buzón situado junto a la entrada.
La exposición de fotografía estará abierta al público hasta finales de octubre.
"""


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().splitlines() if line.strip()]


ENGLISH = _lines(_ENGLISH)
OTHER = {"de": _lines(_GERMAN), "fr": _lines(_FRENCH), "es": _lines(_SPANISH)}


def _english(rng: random.Random, chars: int) -> str:
    parts: list[str] = []
    size = 0
    while size < chars:
        line = rng.choice(ENGLISH).format(
            a=rng.randint(2, 90), b=rng.randint(2, 60), c=rng.randint(2, 9)
        )
        parts.append(line)
        size += len(line) + 1
    return " ".join(parts)


def _other(rng: random.Random, chars: int) -> tuple[str, str]:
    lang = rng.choice(sorted(OTHER))
    parts: list[str] = []
    size = 0
    while size < chars:
        line = rng.choice(OTHER[lang])
        parts.append(line)
        size += len(line) + 1
    return lang, " ".join(parts)


def _draw(rng: random.Random) -> tuple[str, str | None]:
    u = rng.random()
    for outcome, p, code in OUTCOMES:
        if u < p:
            return outcome, code
        u -= p
    return OUTCOMES[-1][0], OUTCOMES[-1][2]


def make_docs(n: int, seed: int = 0) -> list[dict[str, str]]:
    """`n` rows {id, url, text, lang, outcome}; `outcome` is ground truth the run never reads."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        outcome, code = _draw(rng)
        chars = rng.randint(1000, 3000)
        if code is None:
            lang, text = _other(rng, chars)
        else:
            lang = "en"
            body = _english(rng, chars - 50)
            # The code goes in the middle, where the classifier's 6,000-character cut keeps it.
            cut = body.find(". ", len(body) // 2) + 2 or len(body)
            text = (
                f"{body[:cut]}Catalogue reference for this page: NRB-{code}-{i:06d}. {body[cut:]}"
            )
        rows.append(
            {
                "id": f"doc-{i:06d}",
                "url": f"https://example.org/pages/{i:06d}",
                "text": text,
                "lang": lang,
                "outcome": outcome,
            }
        )
    return rows


def write_docs(path: Path, n: int, seed: int = 0) -> Counter[str]:
    """Write the rows as JSON lines; returns the drawn outcomes (the expected funnel)."""
    rows = make_docs(n, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Counter(row["outcome"] for row in rows)
