"""Quality and throughput of peerflow.dedup (near-duplicate detection with MinHash LSH).

Quality (default mode): reads labelled pairs and, for each pair, builds a fresh Deduper, adds
``a`` and asks whether ``b`` is a duplicate of it. Prints precision, recall and F1 over all
pairs, and per kind the share flagged (recall for duplicate kinds, false-positive rate for
the others) with the mean estimated Jaccard of the pair's signatures.

Pair file format (JSON Lines, UTF-8, one object per line; blank lines are skipped)::

    {"a": "first text", "b": "second text", "duplicate": true, "kind": "case_punct"}

``a``/``b``: the two texts; ``duplicate``: the label (should ``b`` be removed once ``a`` is
kept?); ``kind``: any category name, used only to group the per-kind report. A held-out set
in this format runs with ``--pairs FILE``. Our own set is
``benchmarks/data/dedup_pairs.jsonl`` (322 hand-written pairs; duplicate kinds: exact,
case_punct, reworded_light, insert_delete, reorder_clause, number_format, paraphrase_heavy;
non-duplicate kinds: different_numbers, different_entity, same_topic_different_question,
unrelated).

Usage::

    python benchmarks/bench_dedup.py                      # default settings, labelled set
    python benchmarks/bench_dedup.py --pairs held_out.jsonl
    python benchmarks/bench_dedup.py --sweep              # thresholds x shingle settings
    python benchmarks/bench_dedup.py --threshold 0.7 --shingle word --ngram 2
    python benchmarks/bench_dedup.py --throughput         # 1,000,000 synthetic rows
    python benchmarks/bench_dedup.py --throughput --rows 100000

Throughput: generates N templated question rows (deterministic, seeded), of which a known
share are planted duplicates of an earlier row (exact copies, and near copies edited by
re-casing, re-punctuating, dropping/inserting/swapping words, reformatting numbers). It runs
the same batch-then-index loop as ``peerflow.dedup.dedup`` and prints rows/s for signatures
and for index check+insert separately, peak RSS, index bytes per kept row, rows removed, and
recall on the planted duplicates.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
from datasketch import MinHash

from peerflow.dedup import (
    Deduper,
    DedupSettings,
    fingerprints,
    normalize,
    signature,
    signatures,
)

DEFAULT_PAIRS = Path(__file__).parent / "data" / "dedup_pairs.jsonl"

# ---------------------------------------------------------------------------------------------
# Quality on labelled pairs


def load_pairs(path: Path) -> list[dict]:
    pairs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            missing = {"a", "b", "duplicate", "kind"} - row.keys()
            if missing:
                raise ValueError(f"{path}:{n}: missing {sorted(missing)}")
            pairs.append(row)
    return pairs


def evaluate(pairs: list[dict], settings: DedupSettings) -> dict:
    """Predict every pair with a fresh index; return counts overall and per kind."""
    fa = fingerprints([p["a"] for p in pairs], settings)
    fb = fingerprints([p["b"] for p in pairs], settings)
    per_kind: dict[str, dict] = defaultdict(lambda: {"n": 0, "flagged": 0, "sim": 0.0})
    tp = fp = fn = tn = 0
    for i, p in enumerate(pairs):
        d = Deduper(settings, capacity=1)
        d.add_signature("a", int(fa.norm_hashes[i]), fa.hashvalues[i], fa.numbers[i])
        dup = d.check_signature("b", int(fb.norm_hashes[i]), fb.hashvalues[i], fb.numbers[i])
        flagged = dup is not None
        k = per_kind[p["kind"]]
        k["n"] += 1
        k["flagged"] += flagged
        k["duplicate"] = bool(p["duplicate"])
        k["sim"] += float(np.mean(fa.hashvalues[i] == fb.hashvalues[i]))
        if p["duplicate"]:
            tp += flagged
            fn += not flagged
        else:
            fp += flagged
            tn += not flagged
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "precision": precision, "recall": recall, "f1": f1,
        "kinds": dict(per_kind),
    }  # fmt: skip


def describe(s: DedupSettings) -> str:
    guard = "" if s.number_guard else " no-guard"
    return f"{s.shingle}{s.ngram} t={s.threshold:.2f} perm={s.num_perm}{guard}"


def print_report(result: dict, settings: DedupSettings) -> None:
    r = result
    print(f"settings: {describe(settings)}")
    print(
        f"overall: precision {r['precision']:.3f}  recall {r['recall']:.3f}  F1 {r['f1']:.3f}"
        f"  (tp {r['tp']} fp {r['fp']} fn {r['fn']} tn {r['tn']})"
    )
    print(f"{'kind':32} {'label':>5} {'n':>4} {'flagged':>8} {'rate':>6} {'meanJ':>6}")
    kinds = sorted(r["kinds"].items(), key=lambda kv: (not kv[1]["duplicate"], kv[0]))
    for name, k in kinds:
        label = "dup" if k["duplicate"] else "keep"
        metric = "recall" if k["duplicate"] else "FPR"
        rate = k["flagged"] / k["n"]
        print(
            f"{name:32} {label:>5} {k['n']:>4} {k['flagged']:>8} {rate:>6.2f} "
            f"{k['sim'] / k['n']:>6.2f}  {metric}"
        )


def reachable_recall(result: dict, exclude: str = "paraphrase_heavy") -> float:
    """Recall without the kind shingles cannot see, to read the two effects apart."""
    flagged = n = 0
    for name, k in result["kinds"].items():
        if k["duplicate"] and name != exclude:
            flagged += k["flagged"]
            n += k["n"]
    return flagged / n if n else 1.0


def kind_rate(result: dict, name: str) -> float:
    k = result["kinds"].get(name)
    return k["flagged"] / k["n"] if k else float("nan")


def sweep(pairs: list[dict], base: DedupSettings, seeds: int = 3) -> None:
    """Every threshold x shingle setting, guard on and off, averaged over ``seeds`` MinHash
    seeds (one seed's estimates move borderline pairs, about +-0.01 F1)."""
    shingles = [("char", 3), ("char", 4), ("char", 5), ("char", 6), ("word", 1), ("word", 2)]
    shingles += [("word", 3)]
    thresholds = [0.4, 0.5, 0.6, 0.7, 0.8]
    rows = []
    for shingle, n in shingles:
        for t in thresholds:
            for guard in (True, False):
                s = replace(base, shingle=shingle, ngram=n, threshold=t, number_guard=guard)
                runs = [evaluate(pairs, replace(s, seed=base.seed + k)) for k in range(seeds)]
                f1s = [r["f1"] for r in runs]
                mean = {
                    "precision": np.mean([r["precision"] for r in runs]),
                    "recall": np.mean([r["recall"] for r in runs]),
                    "f1": float(np.mean(f1s)),
                    "f1_range": (min(f1s), max(f1s)),
                    "r_para": np.mean([reachable_recall(r) for r in runs]),
                    "num": np.mean([kind_rate(r, "different_numbers") for r in runs]),
                    "ent": np.mean([kind_rate(r, "different_entity") for r in runs]),
                    "top": np.mean([kind_rate(r, "same_topic_different_question") for r in runs]),
                }
                rows.append((s, mean))
    print(f"mean over {seeds} seeds ({base.seed}..{base.seed + seeds - 1}), best F1 first")
    print(
        f"{'settings':30} {'P':>6} {'R':>6} {'F1':>6} {'F1 range':>12} {'R-para':>6} "
        f"{'FPRnum':>6} {'FPRent':>6} {'FPRtop':>6}"
    )
    for s, m in sorted(rows, key=lambda sm: -sm[1]["f1"]):
        lo, hi = m["f1_range"]
        print(
            f"{describe(s).replace(f' perm={s.num_perm}', ''):30} {m['precision']:>6.3f} "
            f"{m['recall']:>6.3f} {m['f1']:>6.3f} {lo:>5.3f}-{hi:<5.3f} {m['r_para']:>6.3f} "
            f"{m['num']:>6.2f} {m['ent']:>6.2f} {m['top']:>6.2f}"
        )
    print(
        "R-para: recall without paraphrase_heavy; FPRnum/ent/top: share of different_numbers/"
        "different_entity/same_topic_different_question pairs wrongly flagged."
    )


# ---------------------------------------------------------------------------------------------
# Throughput on synthetic rows

_NAMES = [
    "Ana",
    "Ben",
    "Carla",
    "Dev",
    "Elif",
    "Farid",
    "Greta",
    "Hiro",
    "Ines",
    "Jonas",
    "Kemi",
    "Luca",
    "Maya",
    "Nadia",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sami",
    "Tariq",
    "Uma",
    "Viktor",
    "Wen",
    "Xavi",
    "Yara",
    "Zoltan",
    "Amara",
    "Bruno",
    "Chen",
    "Dalia",
]
_ITEMS = [
    "apples",
    "notebooks",
    "pencils",
    "tickets",
    "bottles",
    "boxes",
    "cookies",
    "marbles",
    "stamps",
    "batteries",
    "candles",
    "cables",
    "chairs",
    "lamps",
    "mugs",
    "plates",
    "shirts",
    "socks",
    "tiles",
    "tyres",
    "bricks",
    "buttons",
    "cards",
    "coins",
    "envelopes",
    "folders",
    "gloves",
    "helmets",
    "jars",
    "keys",
    "ladders",
    "magnets",
    "nails",
    "oranges",
    "pillows",
    "rulers",
    "scarves",
    "towels",
    "umbrellas",
    "vases",
]
_PLACES = [
    "Lisbon",
    "Nairobi",
    "Osaka",
    "Quito",
    "Riga",
    "Tunis",
    "Perth",
    "Lyon",
    "Porto",
    "Accra",
    "Hanoi",
    "Oslo",
    "Lima",
    "Cork",
    "Graz",
    "Bergen",
    "Cusco",
    "Dakar",
    "Essen",
    "Fukuoka",
    "Gdansk",
    "Hobart",
    "Izmir",
    "Jaipur",
    "Kandy",
    "Leeds",
    "Malmo",
    "Nantes",
]
_TOPICS = [
    "photosynthesis",
    "osmosis",
    "inflation",
    "recursion",
    "entropy",
    "refraction",
    "erosion",
    "mitosis",
    "compound interest",
    "hash tables",
    "binary search",
    "plate tectonics",
    "electrolysis",
    "vaccination",
    "natural selection",
    "supply and demand",
    "the water cycle",
    "ocean tides",
    "static electricity",
    "fermentation",
    "radioactive decay",
    "the greenhouse effect",
    "sound waves",
    "magnetism",
    "garbage collection",
    "public key cryptography",
    "dynamic programming",
    "opportunity cost",
]
_AUDIENCES = [
    "a ten-year-old",
    "a first-year student",
    "a retired engineer",
    "a curious teenager",
    "a new colleague",
    "a history teacher",
    "a nurse",
    "a journalist",
    "a visiting parent",
]
_LANGS = [
    "Python",
    "Rust",
    "Go",
    "Java",
    "Kotlin",
    "Haskell",
    "TypeScript",
    "Ruby",
    "Scala",
    "Elixir",
    "C#",
    "Swift",
]
_TASKS = [
    "reverses a linked list",
    "parses a CSV file",
    "merges two sorted arrays",
    "counts word frequencies",
    "validates an email address",
    "computes a moving average",
    "flattens a nested list",
    "finds the longest common prefix",
    "detects a cycle in a graph",
    "rotates a matrix",
    "removes duplicates from a sorted array",
    "checks whether brackets are balanced",
    "converts Roman numerals to integers",
    "finds the k most frequent elements",
    "serialises a binary tree",
    "computes the edit distance of two strings",
]
_PRODUCTS = [
    "blender",
    "laptop stand",
    "desk lamp",
    "rain jacket",
    "coffee grinder",
    "phone case",
    "yoga mat",
    "electric kettle",
    "backpack",
    "air purifier",
    "office chair",
    "gaming mouse",
    "water bottle",
    "hiking boots",
    "baby monitor",
    "smart speaker",
    "bike light",
    "wall clock",
]
_PROBLEMS = [
    "arrived scratched",
    "stopped working after a week",
    "is missing a part",
    "is the wrong colour",
    "makes a rattling noise",
    "will not turn on",
    "came without a manual",
    "smells of burnt plastic",
    "does not match the photo",
    "has a cracked lid",
]
_OPENERS = [
    *[""] * 12,
    "Consider the following problem.",
    "Here is a question from a practice sheet.",
    "A student asks:",
    "Quick question.",
    "Think carefully before answering.",
    "This is part of a homework set.",
    "Hello, I need some help.",
    "I have been stuck on this for a while.",
    "For a revision session:",
    "From last week's quiz:",
]
_CLOSERS = [
    *[""] * 12,
    "Show your working.",
    "Explain each step.",
    "Give the final answer on its own line.",
    "Keep the explanation short.",
    "State any assumptions you make.",
    "Check your answer at the end.",
    "Answer in two or three sentences.",
    "Use simple language.",
    "Point out a common mistake.",
    "Mention the units in the answer.",
    "Thank you in advance.",
]


def _pick(r: random.Random, options: str) -> str:
    return r.choice(options.split("|"))


def _scenario(r: random.Random) -> str:
    """One templated question; each template has several phrasings and many slot values, so
    two rows of one template usually differ in more than a word or two."""
    n1, n2, n3 = r.randint(2, 999), r.randint(2, 99), r.randint(100, 9999)
    name, name2 = r.sample(_NAMES, 2)
    item, item2 = r.sample(_ITEMS, 2)
    place = r.choice(_PLACES)
    k = r.randrange(10)
    if k == 0:
        return (
            f"{name} {_pick(r, 'buys|purchases|orders|picks up')} {n1} {item} in {place} at "
            f"{n2} dollars each and {_pick(r, 'pays with|hands over|gives the cashier')} "
            f"{n3 * 10} dollars. {_pick(r, 'How much change|What change|How much money')} "
            f"does {name} {_pick(r, 'receive|get back|walk away with')}?"
        )
    if k == 1:
        return (
            f"A {_pick(r, 'train|coach|ferry|truck')} leaves {place} at {n2 % 24}:{n1 % 60:02d} "
            f"{_pick(r, 'travelling|moving|going')} at {n1} km per hour toward "
            f"{r.choice(_PLACES)}. {_pick(r, 'How far has it gone|What distance has it covered')}"
            f" after {n2} minutes, and {_pick(r, 'when does it|at what time will it')} reach "
            f"the {n3} km mark?"
        )
    if k == 2:
        return (
            f"{name} and {name2} {_pick(r, 'share|split|divide')} {n3} {item} in the ratio "
            f"{n2}:{n1 % 50 + 1}. How many {item} does each "
            f"{_pick(r, 'of them get|person receive')}, and what "
            f"{_pick(r, 'fraction|percentage|share')} goes to {name2}?"
        )
    if k == 3:
        return (
            f"{_pick(r, 'Explain|Describe|Summarise|Introduce')} {r.choice(_TOPICS)} to "
            f"{r.choice(_AUDIENCES)} {_pick(r, 'living|studying|working')} in {place}, and "
            f"{_pick(r, 'relate it to|contrast it with|connect it to')} {r.choice(_TOPICS)} "
            f"using an example {_pick(r, 'about|involving|with')} {n1} {item}."
        )
    if k == 4:
        return (
            f"Write a {r.choice(_LANGS)} {_pick(r, 'function|method|program|script')} that "
            f"{r.choice(_TASKS)}, then {_pick(r, 'say|explain|estimate')} how its "
            f"{_pick(r, 'running time|memory use')} grows when the input has {n3} "
            f"{_pick(r, 'elements|items|entries')} instead of {n1}."
        )
    if k == 5:
        return (
            f"My order {n3}{n1} of {n2} {item} was {_pick(r, 'shipped|sent|delivered')} to "
            f"{place} but only {n2 // 2 + 1} arrived. {name} from "
            f"{_pick(r, 'support|customer service|your help desk')} promised a "
            f"{_pick(r, 'refund|replacement|credit note')}. When will I "
            f"{_pick(r, 'get it|receive it|see it')}?"
        )
    if k == 6:
        return (
            f"A {_pick(r, 'tank|pool|reservoir|barrel')} holds {n3} litres and is "
            f"{_pick(r, 'filled|topped up|fed')} at {n1} litres per hour while it "
            f"{_pick(r, 'leaks|loses|drains')} {n2} litres per hour. "
            f"{_pick(r, 'How long until it is full|When will it be full|How long does it take')}"
            f", starting {_pick(r, 'empty|from empty|at zero')}?"
        )
    if k == 7:
        return (
            f"In {place}, {n1} of {n3} {_pick(r, 'surveyed people|residents|students|shoppers')}"
            f" prefer {item} and {n2} prefer both {item} and {item2}. "
            f"{_pick(r, 'What share|What fraction|How many')} prefer only {item}?"
        )
    if k == 8:
        return (
            f"The {r.choice(_PRODUCTS)} I {_pick(r, 'bought|ordered|received')} from you "
            f"{r.choice(_PROBLEMS)}. It was {_pick(r, 'a gift for|meant for|bought for')} "
            f"{name}. Can I {_pick(r, 'return it|exchange it|get it repaired')} after {n2} "
            f"days, and {_pick(r, 'who pays for shipping|do I need the receipt|is it covered')}?"
        )
    return (
        f"{_pick(r, 'Prove|Show|Explain why')} that the sum of the first {n1} "
        f"{_pick(r, 'odd numbers|even numbers|multiples of ' + str(n2) + '|square numbers')} "
        f"{_pick(r, 'equals|is given by|can be written as')} a closed formula, and "
        f"{_pick(r, 'check it|verify it|test it')} for {n1 % 9 + 2} terms."
    )


_ACTIVITIES = [
    "revising for an exam",
    "planning a school trip",
    "tutoring a younger cousin",
    "preparing a talk",
    "checking a spreadsheet",
    "writing a blog post",
    "coaching a robotics club",
    "grading quizzes",
    "reading a textbook on the bus",
    "working a weekend shift",
    "building a small website",
]
_SOURCES = [
    "a local newspaper",
    "a government report",
    "a museum leaflet",
    "an old exam paper",
    "a podcast",
    "a cookery show",
    "a company newsletter",
    "a science magazine",
    "a town council meeting",
]


def _context(r: random.Random) -> str:
    """A second, independent sentence: real questions carry their own context, which keeps
    two rows of one template from looking alike."""
    name, name2 = r.sample(_NAMES, 2)
    k = r.randrange(8)
    if k == 0:
        return f"This came up while {name} was {r.choice(_ACTIVITIES)} in {r.choice(_PLACES)}."
    if k == 1:
        return f"The figures are taken from {r.choice(_SOURCES)} dated {r.randint(1990, 2024)}."
    if k == 2:
        return f"{name} thinks the answer is {r.randint(2, 500)}, but {name2} disagrees."
    if k == 3:
        return f"My {_pick(r, 'teacher|tutor|manager|sister|flatmate')} {name} said it is easy."
    if k == 4:
        return f"I tried it with {r.choice(_ITEMS)} and {r.choice(_ITEMS)} first and got lost."
    if k == 5:
        return f"It is for {r.choice(_SOURCES)} that {name} is {r.choice(_ACTIVITIES)} for."
    if k == 6:
        return f"We only have {r.randint(5, 90)} minutes before {r.choice(_ACTIVITIES)}."
    return ""


def make_row(i: int, seed: int) -> str:
    r = random.Random(seed * 1_000_003 + i)
    parts = [r.choice(_OPENERS), _context(r), _scenario(r), r.choice(_CLOSERS)]
    return " ".join(p for p in parts if p)


_FILLERS = ["please", "exactly", "really", "also", "now", "here"]


def _edit_numbers(text: str, r: random.Random) -> str:
    words = text.split(" ")
    for j, w in enumerate(words):
        if w.isdigit() and len(w) >= 4 and r.random() < 0.7:
            words[j] = f"{int(w):,}"
    return " ".join(words)


def near_copy(text: str, r: random.Random) -> str:
    """1-2 light edits that a near-duplicate detector should see through."""
    for _ in range(r.randint(1, 2)):
        words = text.split(" ")
        k = r.randrange(6)
        if k == 0:
            text = text.lower() if r.random() < 0.5 else text.upper()
        elif k == 1:
            text = text.replace(",", "").replace("?", " ?").replace(".", "!")
        elif k == 2 and len(words) > 8:
            j = r.randrange(1, len(words) - 1)
            if not any(c.isdigit() for c in words[j]):
                del words[j]
            text = " ".join(words)
        elif k == 3:
            words.insert(r.randrange(1, len(words)), r.choice(_FILLERS))
            text = " ".join(words)
        elif k == 4 and len(words) > 4:
            j = r.randrange(len(words) - 1)
            words[j], words[j + 1] = words[j + 1], words[j]
            text = " ".join(words)
        else:
            text = _edit_numbers(text, r)
    return text


def synthetic_rows(n: int, seed: int, p_exact: float, p_near: float):
    """Yield (key, text, planted_source_or_None). Planted rows copy an earlier original."""
    r = random.Random(seed)
    originals: list[int] = []
    for i in range(n):
        u = r.random()
        if originals and u < p_exact + p_near:
            src = originals[r.randrange(len(originals))]
            text = make_row(src, seed)
            if u >= p_exact:
                text = near_copy(text, r)
            yield f"r{i}", text, f"r{src}"
        else:
            originals.append(i)
            yield f"r{i}", make_row(i, seed), None


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def throughput(n: int, settings: DedupSettings, seed: int, batch: int) -> None:
    p_exact, p_near = 0.05, 0.10
    print(f"settings: {describe(settings)}; rows {n:,}; planted exact {p_exact}, near {p_near}")
    deduper = Deduper(settings, capacity=n)
    rss0 = rss_mb()
    t_sig = t_idx = t_gen = 0.0
    planted = planted_hit = planted_right = removed = unplanted_removed = 0
    exact = near = 0
    rows = synthetic_rows(n, seed, p_exact, p_near)
    done = 0
    t_start = time.perf_counter()
    while done < n:
        t0 = time.perf_counter()
        chunk = [next(rows) for _ in range(min(batch, n - done))]
        t1 = time.perf_counter()
        fp = fingerprints([text for _, text, _ in chunk], settings)
        t2 = time.perf_counter()
        results = [
            deduper.check_and_add_signature(
                key, int(fp.norm_hashes[i]), fp.hashvalues[i], fp.numbers[i]
            )
            for i, (key, _, _) in enumerate(chunk)
        ]
        t3 = time.perf_counter()
        t_gen += t1 - t0
        t_sig += t2 - t1
        t_idx += t3 - t2
        for (_, _, src), dup in zip(chunk, results, strict=True):
            if dup is not None:
                removed += 1
                exact += dup.kind == "exact"
                near += dup.kind == "near"
            if src is not None:
                planted += 1
                planted_hit += dup is not None
                planted_right += dup is not None and dup.of == src
            elif dup is not None:
                unplanted_removed += 1
        done += len(chunk)
        if done % (batch * 50) == 0 or done == n:
            el = time.perf_counter() - t_start
            print(f"  {done:>9,} rows  {el:7.1f} s  rss {rss_mb():7.0f} MB", file=sys.stderr)
    rss1 = rss_mb()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kept = len(deduper)
    print(f"generate rows        : {n / t_gen:>10,.0f} rows/s  ({t_gen:.1f} s, not counted)")
    print(f"signatures (batched) : {n / t_sig:>10,.0f} rows/s  ({t_sig:.1f} s)")
    print(f"index check+insert   : {n / t_idx:>10,.0f} rows/s  ({t_idx:.1f} s)")
    print(f"end to end           : {n / (t_sig + t_idx):>10,.0f} rows/s")
    print(
        f"LSH: {deduper.bands} bands x {deduper.rows_per_band} rows; candidates verified per "
        f"row {deduper.candidates_checked / n:.2f}"
    )
    print(f"removed {removed:,} ({removed / n:.1%}): exact {exact:,}, near {near:,}; kept {kept:,}")
    print(
        f"planted {planted:,}: recall {planted_hit / max(planted, 1):.4f} "
        f"(of = planted source {planted_right / max(planted, 1):.4f}); "
        f"unplanted rows removed {unplanted_removed:,}"
    )
    print(
        f"peak RSS {peak:,.0f} MB; index growth {rss1 - rss0:,.0f} MB = "
        f"{(rss1 - rss0) * 2**20 / max(kept, 1):,.0f} bytes per kept row"
    )


def reference_speed(settings: DedupSettings, n: int = 3000) -> None:
    """Per-row datasketch path (MinHash.update_batch) for comparison with the batch path, and
    how alike the synthetic rows are (the LSH candidate load grows with that)."""
    texts = [make_row(i, 99) for i in range(n)]
    sigs = signatures(texts, settings)
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, n, 200_000), rng.integers(0, n, 200_000)
    keep = i != j
    sims = np.mean(sigs[i[keep]] == sigs[j[keep]], axis=1)
    q = np.quantile(sims, [0.5, 0.99, 0.999])
    print(
        f"synthetic rows: {np.mean([len(t.split()) for t in texts]):.0f} words on average; "
        f"Jaccard of random pairs: median {q[0]:.2f}, p99 {q[1]:.2f}, p99.9 {q[2]:.2f}"
    )
    t0 = time.perf_counter()
    for t in texts:
        signature(t, settings)
    t1 = time.perf_counter()
    fingerprints(texts, settings)
    t2 = time.perf_counter()
    for t in texts:  # plain datasketch: SHA-1 of every shingle's bytes
        norm = normalize(t)
        m = MinHash(num_perm=settings.num_perm, seed=settings.seed)
        m.update_batch([norm[k : k + 5].encode() for k in range(max(len(norm) - 4, 1))])
    t3 = time.perf_counter()
    print(
        f"signature rows/s on {n} rows: batched numpy path {n / (t2 - t1):,.0f}; per-row "
        f"signature() through MinHash.update_batch {n / (t1 - t0):,.0f}; plain datasketch "
        f"(SHA-1 per char 5-gram) {n / (t3 - t2):,.0f}"
    )


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS, help="labelled pairs (JSONL)")
    ap.add_argument("--sweep", action="store_true", help="thresholds x shingle settings")
    ap.add_argument("--sweep-seeds", type=int, default=3, help="MinHash seeds to average")
    ap.add_argument("--throughput", action="store_true", help="synthetic rows instead of pairs")
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows for --throughput")
    ap.add_argument("--batch", type=int, default=4096, help="rows hashed per batch")
    ap.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    d = DedupSettings()
    ap.add_argument("--threshold", type=float, default=d.threshold)
    ap.add_argument("--shingle", choices=["char", "word"], default=d.shingle)
    ap.add_argument("--ngram", type=int, default=d.ngram)
    ap.add_argument("--num-perm", type=int, default=d.num_perm)
    ap.add_argument("--fp-weight", type=float, default=d.fp_weight)
    ap.add_argument("--no-number-guard", action="store_true")
    args = ap.parse_args(argv)
    settings = DedupSettings(
        threshold=args.threshold,
        shingle=args.shingle,
        ngram=args.ngram,
        num_perm=args.num_perm,
        fp_weight=args.fp_weight,
        number_guard=not args.no_number_guard,
    )
    if args.throughput:
        reference_speed(settings)
        throughput(args.rows, settings, args.seed, args.batch)
        return 0
    pairs = load_pairs(args.pairs)
    print(f"{len(pairs)} pairs from {args.pairs}")
    if args.sweep:
        sweep(pairs, settings, args.sweep_seeds)
        print()
    print_report(evaluate(pairs, settings), settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
