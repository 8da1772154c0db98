"""peerflow.dedup: normalisation, exact and near duplicates, the number guard, streaming, the
batch and precomputed-signature paths, and quality floors on the labelled pairs."""

from __future__ import annotations

import pickle
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from peerflow.dedup import (
    NUMBER_SLOTS,
    Deduper,
    DedupSettings,
    Duplicate,
    dedup,
    fingerprint,
    fingerprints,
    normalize,
    number_set,
    signature,
    signatures,
    text_hash,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_dedup  # noqa: E402

Q = (
    "A rectangular garden is 12 meters long and 7 meters wide. If a path 1 meter wide is "
    "built around the outside of the garden, what is the area of the path in square meters?"
)
# The same question, lightly reworded (two words changed, one dropped).
Q_NEAR = (
    "A rectangular garden is 12 meters long and 7 meters wide. If a path 1 meter wide is "
    "built around the outside of the garden, what is the total area of that path in meters?"
)
# Same template, different numbers: a different question.
Q_OTHER_NUMBERS = Q.replace("12 meters", "15 meters").replace("7 meters", "9 meters")


# -- normalisation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello,   WORLD!\n\tHow are you?", "hello world how are you"),
        ("Don't STOP: it's fine...", "dont stop its fine"),  # apostrophes deleted, not spaced
        ("\uff21\uff22\uff23 \uff11\uff12\uff13", "abc 123"),  # full-width letters/digits (NFKC)
        ("Stra\u00dfe", "strasse"),  # casefold, stronger than lower()
        ("\ufb01ne\u00a0print", "fine print"),  # ligature and no-break space (NFKC)
        ("It costs 1,250,000 dollars", "it costs 1250000 dollars"),  # digit groups dropped
        ("Use 2.5 kg, not 25 kg.", "use 2.5 kg not 25 kg"),  # decimal point kept
        ("x*3 vs x/3 vs x+3 in C#", "x*3 vs x/3 vs x+3 in c#"),  # operators and symbols kept
        ("my_var = a % b", "my_var = a % b"),
        ("\u201cquoted\u201d \u2014 (aside) [note] {x}", "quoted aside note x"),
        ("  ", ""),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def test_text_hash_ignores_case_punctuation_and_spacing() -> None:
    assert text_hash("What is 2+2?") == text_hash("  what IS 2+2 ")
    assert text_hash("What is 2+2?") != text_hash("What is 2+3?")


def test_number_set_reads_digits_formats_and_words() -> None:
    assert np.array_equal(
        number_set("five apples and 3 pears"), number_set("5 apples, three pears")
    )
    assert np.array_equal(number_set("costs 1,000 or 2.50"), number_set("costs 1000 or 2.5"))
    assert np.array_equal(number_set("twenty five"), number_set("25"))
    assert not np.array_equal(number_set("12 apples"), number_set("15 apples"))
    assert not number_set("no numbers here").any()
    assert number_set("1 2 3 4 5 6 7 8 9 10 11").shape == (NUMBER_SLOTS,)


# -- the Deduper --------------------------------------------------------------------------------


def test_exact_duplicate_after_normalisation() -> None:
    d = Deduper()
    assert d.check_and_add("q1", Q) is None
    dup = d.check_and_add("q2", Q.upper().replace(",", " ").replace("?", " ?"))
    assert dup == Duplicate(of="q1", kind="exact", similarity=1.0)
    assert len(d) == 1  # the duplicate was not kept


def test_near_duplicate_is_flagged_with_similarity_at_least_threshold() -> None:
    s = DedupSettings()
    d = Deduper(s)
    d.add("q1", Q)
    dup = d.check("q2", Q_NEAR)
    assert dup is not None
    assert (dup.of, dup.kind) == ("q1", "near")
    assert s.threshold <= dup.similarity < 1.0
    # The reported similarity is the estimate from the two signatures.
    assert dup.similarity == np.mean(signature(Q, s) == signature(Q_NEAR, s))


def test_hard_negative_different_numbers_kept_by_guard_removed_without_it() -> None:
    """Documents the behaviour: the same template with new numbers shares most shingles
    (estimated Jaccard well above the threshold), so plain MinHash removes it; the number
    guard keeps it. A reworded copy that keeps the numbers is still removed."""
    s = DedupSettings()
    assert np.mean(signature(Q, s) == signature(Q_OTHER_NUMBERS, s)) >= s.threshold
    guarded = Deduper(s)
    guarded.add("q1", Q)
    assert guarded.check("q2", Q_OTHER_NUMBERS) is None
    assert guarded.check("q3", Q_NEAR) is not None
    plain = Deduper(DedupSettings(number_guard=False))
    plain.add("q1", Q)
    assert plain.check("q2", Q_OTHER_NUMBERS) is not None


def test_number_written_as_word_or_dropped_does_not_block() -> None:
    words = (
        "There are five apples and three oranges in a basket. If two fruits are picked at "
        "random, what is the probability that both of them are apples?"
    )
    digits = (
        "There are 5 apples and 3 oranges in a basket. If 2 fruits are picked at random, "
        "what is the probability that both of them are apples?"
    )
    d = Deduper()
    d.add("q1", words)
    dup = d.check("q2", digits)
    assert dup is not None and dup.kind == "near"


def test_hard_negative_different_entity_is_a_known_weakness() -> None:
    """Documents the behaviour: one swapped entity in a long shared template looks, to
    shingles, exactly like a light rewording, so it IS removed at the default threshold."""
    a = (
        "Describe the main properties of sodium, including its reactivity with water and why "
        "it is stored under oil in school laboratories."
    )
    b = a.replace("sodium", "potassium")
    d = Deduper()
    d.add("a", a)
    dup = d.check("b", b)
    assert dup is not None and dup.kind == "near"


def test_lsh_candidate_below_threshold_is_not_reported() -> None:
    # fp_weight=0 makes datasketch pick 1-row bands: nearly any pair becomes a candidate.
    s = DedupSettings(threshold=0.8, fp_weight=0.0)
    d = Deduper(s)
    d.add("q1", Q)
    other = Q_NEAR + " Give the answer in square centimetres as well, and explain the method."
    sig = signature(other, s)
    est = np.mean(signature(Q, s) == sig)
    assert 0.2 < est < s.threshold
    assert d._lsh.query(d._minhash(sig)) == [0]  # LSH does bucket them together...
    assert d.check("q2", other) is None  # ...but the estimate is below the threshold


def test_row_is_not_a_duplicate_of_itself() -> None:
    d = Deduper()
    d.add("q1", Q)
    assert d.check("q1", Q) is None
    assert d.check("q1", Q_NEAR) is None
    assert d.check("q2", Q) is not None


def test_check_and_add_is_atomic_across_threads() -> None:
    d = Deduper()
    results: list[Duplicate | None] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker(i: int) -> None:
        start.wait()
        r = d.check_and_add(f"k{i}", Q if i % 2 else Q.lower())
        with lock:
            results.append(r)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is None for r in results) == 1
    assert len(d) == 1


# -- streaming ----------------------------------------------------------------------------------


def test_dedup_streams_in_order_and_keeps_first_occurrence() -> None:
    items = [
        ("a", Q),
        ("b", Q_NEAR),  # near duplicate of a
        ("c", Q_OTHER_NUMBERS),  # different question
        ("d", Q.lower()),  # exact duplicate of a
        ("e", "How do I reset my password if I no longer have access to my email address?"),
        ("f", Q_OTHER_NUMBERS + " "),  # exact duplicate of c
    ]
    out = list(dedup(iter(items), batch_size=2))  # batches split across duplicates
    assert [k for k, _ in out] == list("abcdef")
    res = dict(out)
    assert res["a"] is None and res["c"] is None and res["e"] is None
    assert (res["b"].of, res["b"].kind) == ("a", "near")
    assert res["d"] == Duplicate("a", "exact", 1.0)
    assert res["f"] == Duplicate("c", "exact", 1.0)


def test_dedup_continues_against_an_existing_index() -> None:
    d = Deduper()
    d.add("old", Q)
    assert dict(dedup([("new", Q_NEAR)], deduper=d))["new"].of == "old"


# -- signatures ---------------------------------------------------------------------------------

TEXTS = [
    Q,
    Q_NEAR,
    "",
    "ab",
    "Hi!",
    "one two",
    "one two three",
    "\u4eca\u65e5\u306f\u826f\u3044\u5929\u6c17\u3067\u3059\u306d",  # no spaces: char shingles work
    "Write a Python function that returns the n-th Fibonacci number using memoization.",
]


@pytest.mark.parametrize(
    "settings",
    [
        DedupSettings(),
        DedupSettings(shingle="word", ngram=3),
        DedupSettings(shingle="word", ngram=1, num_perm=64, seed=7),
        DedupSettings(shingle="char", ngram=3, num_perm=256),
    ],
)
def test_batch_signatures_equal_single_datasketch_path(settings: DedupSettings) -> None:
    batch = signatures(TEXTS, settings)
    assert batch.shape == (len(TEXTS), settings.num_perm) and batch.dtype == np.uint32
    for text, row in zip(TEXTS, batch, strict=True):
        assert np.array_equal(row, signature(text, settings))


def _shingles(text: str, s: DedupSettings) -> set[str]:
    norm = normalize(text)
    units = list(norm) if s.shingle == "char" else norm.split()
    sep = "" if s.shingle == "char" else " "
    if len(units) <= s.ngram:
        return {sep.join(units)} if units else set()
    return {sep.join(units[i : i + s.ngram]) for i in range(len(units) - s.ngram + 1)}


@pytest.mark.parametrize(
    "settings", [DedupSettings(num_perm=512), DedupSettings(shingle="word", ngram=2, num_perm=512)]
)
def test_signature_estimates_true_shingle_jaccard(settings: DedupSettings) -> None:
    """The vectorised substring hashing shingles what a plain Python reference does."""
    pairs = [(Q, Q_NEAR), (Q, Q_OTHER_NUMBERS), (Q, TEXTS[-1]), (TEXTS[-1], TEXTS[-1] + " Why?")]
    for a, b in pairs:
        sa, sb = _shingles(a, settings), _shingles(b, settings)
        true = len(sa & sb) / len(sa | sb)
        est = np.mean(signature(a, settings) == signature(b, settings))
        assert abs(est - true) < 0.08, (a, b, true, est)


def test_precomputed_signature_path_equals_text_path() -> None:
    texts = [Q, Q_NEAR, Q_OTHER_NUMBERS, Q.lower(), TEXTS[-1], TEXTS[-1] + " Please be brief."]
    by_text, by_sig = Deduper(), Deduper()
    fps = fingerprints(texts)
    for i, t in enumerate(texts):
        r1 = by_text.check_and_add(f"k{i}", t)
        one = fingerprint(t)
        assert one[0] == fps.norm_hashes[i] and np.array_equal(one[1], fps.hashvalues[i])
        r2 = by_sig.check_and_add_signature(f"k{i}", *one)
        assert r1 == r2
    assert len(by_text) == len(by_sig)


def test_signature_pickles_small_and_round_trips() -> None:
    norm_hash, hashvalues, nums = fingerprint(Q)
    payload = pickle.dumps(("k1", norm_hash, hashvalues, nums))
    assert len(payload) < 1000  # 128 x uint32 = 512 B of values plus headers
    key, h, hv, n = pickle.loads(payload)
    assert np.array_equal(hv, hashvalues) and hv.dtype == np.uint32
    d = Deduper()
    d.add_signature(key, h, hv, n)
    # A plain list of ints (e.g. after JSON) works as well.
    dup = d.check_signature("k2", *fingerprint(Q_NEAR)[:1], list(map(int, signature(Q_NEAR))))
    assert dup is not None and dup.of == "k1"


def test_wrong_signature_length_is_rejected() -> None:
    with pytest.raises(ValueError, match="hash values"):
        Deduper().check_and_add_signature("k", 1, np.zeros(64, dtype=np.uint32))


# -- quality on the labelled set ----------------------------------------------------------------


def test_labelled_set_quality_floors() -> None:
    """Measured at the defaults (char 5-grams, threshold 0.6, 128 permutations, seed 1,
    fp_weight 0.3): precision 0.889, recall 0.814 (0.958 without paraphrase_heavy), F1 0.850.
    Floors sit a little below so a quality regression fails here."""
    pairs = bench_dedup.load_pairs(bench_dedup.DEFAULT_PAIRS)
    assert len(pairs) >= 300
    assert 0.4 <= sum(p["duplicate"] for p in pairs) / len(pairs) <= 0.6
    r = bench_dedup.evaluate(pairs, DedupSettings())
    assert r["precision"] >= 0.86
    assert r["recall"] >= 0.79
    assert bench_dedup.reachable_recall(r) >= 0.93
    assert bench_dedup.kind_rate(r, "exact") == 1.0
    assert bench_dedup.kind_rate(r, "case_punct") == 1.0
    assert bench_dedup.kind_rate(r, "reworded_light") >= 0.95
    assert bench_dedup.kind_rate(r, "insert_delete") >= 0.93
    assert bench_dedup.kind_rate(r, "reorder_clause") >= 0.75
    assert bench_dedup.kind_rate(r, "number_format") >= 0.9
    assert bench_dedup.kind_rate(r, "different_numbers") <= 0.05
    assert bench_dedup.kind_rate(r, "unrelated") == 0.0
    assert bench_dedup.kind_rate(r, "same_topic_different_question") <= 0.05
    # Known weaknesses, pinned so a change in them is noticed:
    assert bench_dedup.kind_rate(r, "paraphrase_heavy") <= 0.1
    assert bench_dedup.kind_rate(r, "different_entity") <= 0.55
