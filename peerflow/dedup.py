"""Near-duplicate detection for training-data export: an exact tier plus MinHash LSH.

Generated questions (or answers) repeat themselves: the same question comes back re-cased,
re-punctuated, with a word inserted or two clauses swapped. Training on such copies wastes
compute and over-weights them, so the export drops every row that duplicates one already kept
(first occurrence wins). Two tiers decide:

* **exact**: a 64-bit BLAKE2b hash of :func:`normalize` (text), so case, punctuation and
  spacing differences are caught for 8 bytes of key per kept row;
* **near**: a MinHash signature (``datasketch``, scheme ``affine32``) of the text's shingles,
  looked up in a :class:`datasketch.MinHashLSH` index. LSH only proposes candidates; a row is
  reported as a near duplicate only when the Jaccard similarity *estimated from the two
  signatures* reaches ``threshold``, so bucket collisions alone never remove a row.

A **number guard** (on by default) refuses a near match when a number was *changed*: each
text has a number the other lacks. Templated maths questions ("a train travels 120 km in 2
hours" / "150 km in 3 hours") share most of their shingles yet are different questions;
without the guard MinHash merges them (see ``benchmarks/bench_dedup.py`` for the per-kind
numbers). Number formats are canonicalised ("1,000" = "1000", "2.50" = "2.5") and English
number words are read ("five" = "5", "twenty five" = "25"); a number merely added or dropped
by a rewording ("in one hour" / "in an hour") does not block.

What it cannot do: a heavy paraphrase (same meaning, different words) shares few shingles and
is kept; a question that differs from a kept one by a single entity ("capital of France" /
"capital of Spain") looks, to shingles, exactly like a light rewording and may be removed.
Both limits are measured per kind by the benchmark's labelled set.

Fast path: :func:`fingerprints` hashes the shingles of a whole batch with numpy (a polynomial
substring hash over the code points, vectorised) and applies datasketch's own permutation
parameters and pre-mix, so its signatures are bit-identical to ``MinHash.update_batch`` on the
same shingle hashes (tested). On 40-word rows: ~20,000 rows/s on one core, against ~4,300
rows/s row by row through ``MinHash.update_batch`` and ~3,500 rows/s for plain datasketch
(SHA-1 of each shingle).

Distributed use: a worker calls :func:`fingerprints` and ships ``(key, norm_hash, hashvalues,
numbers)`` per row; the process holding the index calls
:meth:`Deduper.check_and_add_signature`. ``hashvalues`` is a plain ``uint32`` numpy array
(datasketch's affine32 scheme stores 32-bit values: half of uint64) and ``numbers`` a
``uint32`` array of ``NUMBER_SLOTS``; the whole tuple pickles to about 750 bytes at
``num_perm=128``. All hashing is seeded and process-independent (no ``hash()``), so workers
and the index agree.

Memory per kept row: about 6.6 KB at the defaults (``MEMORY_NOTE`` has the breakdown). The
LSH index dominates: ``datasketch``'s in-memory storage keeps, for each of its bands, a bytes
key and a Python ``set`` per bucket; the signature copy used to verify candidates is
``4 * num_perm`` = 512 B. 1M rows therefore need ~6 GB in the process holding the index.
"""

from __future__ import annotations

import hashlib
import math
import re
import sys
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from typing import Literal

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

__all__ = [
    "MEMORY_NOTE",
    "NUMBER_SLOTS",
    "DedupSettings",
    "Deduper",
    "Duplicate",
    "Fingerprints",
    "dedup",
    "fingerprint",
    "fingerprints",
    "normalize",
    "number_set",
    "signature",
    "signatures",
    "text_hash",
]

MEMORY_NOTE = (
    "About 6.6 KB per kept row at the defaults (char 5-grams, threshold 0.6, num_perm 128, "
    "LSH 21 bands x 6 rows), measured as RSS growth over 1M synthetic rows (839,553 kept: "
    "+5.3 GB, peak RSS 5.4 GB): ~6 KB is datasketch's in-memory MinHashLSH (per band, a "
    "bytes key and a Python set per bucket, ~290 B), 512 B the signature copy used to verify "
    "candidates, 32 B the number slots, ~100 B the key string and exact-tier dict entry."
)

_SCHEME = "affine32"  # datasketch 2.0 default: 32-bit values, collision-free permutations.

# ---------------------------------------------------------------------------------------------
# Normalisation


# Punctuation that only structures prose becomes a space. Operator-like punctuation is kept
# because in maths and code it changes the question: "x*3" vs "x/3", "C#" vs "C", "a%b",
# "my_var". Symbols (Unicode S*: + = < > ^ $ ...) are never touched for the same reason.
_KEEP_PUNCT = frozenset("*/%#&@\\_")
# Apostrophes are deleted rather than spaced so "don't" == "dont" and "user's" == "users".
_APOSTROPHES = frozenset("'\u2019\u02bc\u2018")
_DIGIT_GROUP = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")  # 1,000,000 -> 1000000
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")  # keep 2.5 as one number, not "2 5"
_PROTECTED_POINT = "\ue000"  # private-use code point: not punctuation, restored to "."
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@lru_cache(maxsize=1)
def _punct_table() -> dict[int, str | None]:
    """str.translate table for every Unicode punctuation code point (built once, ~0.1 s)."""
    table: dict[int, str | None] = {}
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        if ch in _APOSTROPHES:
            table[cp] = None
        elif ch not in _KEEP_PUNCT and unicodedata.category(ch).startswith("P"):
            table[cp] = " "
    return table


def normalize(text: str) -> str:
    """Canonical form used by both tiers.

    1. Unicode NFKC: full-width letters and digits, ligatures, non-breaking and other
       compatibility spaces fold to their plain forms, so text pasted from different
       sources compares equal.
    2. casefold (stronger than ``lower``: "Straße" == "STRASSE"): a re-cased question is the
       same question.
    3. Digit-group commas removed ("1,000" -> "1000") and decimal points between digits kept,
       so number formatting does not split or merge numbers.
    4. Prose punctuation -> space, apostrophes deleted: re-punctuating is not a new question.
       Operator-like punctuation (``* / % # & @ \\ _``) and symbols (``+ = < > ^ $``) stay,
       since they change a maths or code question. The hyphen-minus goes (hyphens in prose
       far outnumber minus signs; "x-3" still differs from "x+3").
    5. Whitespace collapsed to single spaces and trimmed: spacing and line breaks carry no
       meaning here, and single spaces make word boundaries exact for word shingles.
    """
    s = unicodedata.normalize("NFKC", text).casefold()
    s = _DIGIT_GROUP.sub("", s)
    s = _DECIMAL_POINT.sub(_PROTECTED_POINT, s)
    s = s.translate(_punct_table()).replace(_PROTECTED_POINT, ".")
    return " ".join(s.split())


def text_hash(text: str) -> int:
    """64-bit hash of the normalized text: the exact tier's key (stable across processes)."""
    return _hash64(normalize(text))


def _hash64(norm: str) -> int:
    return int.from_bytes(hashlib.blake2b(norm.encode(), digest_size=8).digest(), "little")


def _canonical_number(tok: str) -> str:
    whole, _, frac = tok.partition(".")
    whole = whole.lstrip("0") or "0"
    frac = frac.rstrip("0")
    return f"{whole}.{frac}" if frac else whole


_UNITS = {
    w: i
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
        ]
    )
}
_TENS = {
    w: 10 * i
    for i, w in enumerate(
        ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"], 2
    )
}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}


def _word_numbers(tokens: list[str]) -> list[int]:
    """English cardinal numbers spelled as words: "five" -> 5, "twenty five" -> 25,
    "three hundred and two" -> 302. Deliberately small: no ordinals or fractions."""
    out: list[int] = []
    total = cur = 0
    active = False
    last = ""  # "unit", "tens", "scale"
    for w in [*tokens, ""]:
        if (
            w in _UNITS
            and last in ("", "tens", "scale")
            and not (last == "tens" and _UNITS[w] >= 10)
        ):
            cur += _UNITS[w]
            active, last = True, "unit"
            continue
        if w in _TENS and last in ("", "scale"):
            cur += _TENS[w]
            active, last = True, "tens"
            continue
        if w in _SCALES and active:
            if _SCALES[w] == 100:
                cur = max(cur, 1) * 100
            else:
                total += max(cur, 1) * _SCALES[w]
                cur = 0
            last = "scale"
            continue
        if w == "and" and last == "scale":
            continue
        if active:
            out.append(total + cur)
        total = cur = 0
        active = False
        last = ""
        # A number word that could not extend the previous number starts a new one.
        if w in _UNITS:
            cur, active, last = _UNITS[w], True, "unit"
        elif w in _TENS:
            cur, active, last = _TENS[w], True, "tens"
    return out


NUMBER_SLOTS = 8  # numbers kept per row for the guard (the 8 smallest hashes if more)


def _numbers_of_norm(norm: str) -> np.ndarray:
    values = {_canonical_number(t) for t in _NUMBER.findall(norm)}
    values.update(str(n) for n in _word_numbers(norm.split()))
    # 32-bit hashes in [1, 2^32): 0 pads the fixed-size array.
    hashes = sorted({_hash64(v) % 0xFFFFFFFF + 1 for v in values})[:NUMBER_SLOTS]
    out = np.zeros(NUMBER_SLOTS, dtype=np.uint32)
    out[: len(hashes)] = hashes
    return out


def number_set(text: str) -> np.ndarray:
    """The numbers in the text (digits, or English words such as "twenty five") as up to
    ``NUMBER_SLOTS`` sorted 32-bit hashes, zero-padded: the number guard's input.

    The guard refuses a near match only when *each* text has a number the other lacks (a
    changed number); a number merely added or dropped by a rewording does not block. A row
    with more than ``NUMBER_SLOTS`` distinct numbers keeps the smallest hashes (a bottom-k
    sample, the same for equal sets), so the guard is approximate for such rows.
    """
    return _numbers_of_norm(normalize(text))


# ---------------------------------------------------------------------------------------------
# Settings and results


@dataclass(frozen=True)
class DedupSettings:
    """What counts as a near duplicate, and how hard the index looks for one.

    Defaults come from ``benchmarks/bench_dedup.py --sweep`` on the 322 labelled pairs in
    ``benchmarks/data/dedup_pairs.jsonl``: character 5-grams at 0.6 scored F1 0.854
    (precision 0.890, recall 0.820; 0.965 without the heavy paraphrases no shingling can
    see), within 0.003 of the best cell (3-grams at 0.6) with fewer false positives; word
    n-grams scored lower (unigrams 0.845 at 0.7, bigrams 0.833, trigrams 0.816). Character
    n-grams also need no tokenizer, so text without spaces (Chinese, Japanese) works.
    """

    #: Estimated Jaccard similarity of the shingle sets at or above which a row is a near dup.
    threshold: float = 0.6
    #: MinHash permutations: more = tighter estimate (std ~ sqrt(J(1-J)/num_perm)), more memory.
    num_perm: int = 128
    #: "char": n-grams of characters of the normalized text; "word": n-grams of words.
    shingle: Literal["char", "word"] = "char"
    #: n of the n-grams.
    ngram: int = 5
    #: Seed of the permutations; every process that shares an index must use the same one.
    seed: int = 1
    #: Refuse near matches whose numbers differ (templated questions with new numbers).
    number_guard: bool = True
    #: LSH band layout is chosen by datasketch to minimise fp_weight*P(false candidate) +
    #: (1-fp_weight)*P(missed candidate). Candidates are verified anyway, so a missed candidate
    #: costs recall while a false one only costs a comparison: weight misses more. 0.3 gives
    #: 21 bands x 6 rows at the defaults: on the labelled set F1 is 0.007 below 0.2's (23 x 5)
    #: averaged over 5 seeds, but on templated data it verifies ~4x fewer candidates per row,
    #: which is what the index spends its time on at 1M rows. 0.5 (18 x 7) loses 0.03 F1.
    fp_weight: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError("threshold must be in (0, 1]")
        if self.num_perm < 2:
            raise ValueError("num_perm must be >= 2")
        if self.shingle not in ("char", "word"):
            raise ValueError("shingle must be 'char' or 'word'")
        if self.ngram < 1:
            raise ValueError("ngram must be >= 1")
        if not 0.0 <= self.fp_weight <= 1.0:
            raise ValueError("fp_weight must be in [0, 1]")

    @property
    def min_matches(self) -> int:
        """Equal signature slots needed to reach ``threshold`` (integer, no float ties)."""
        return max(1, math.ceil(self.threshold * self.num_perm - 1e-9))


@dataclass(frozen=True)
class Duplicate:
    """Why a row was dropped: the kept row's key, the tier, and the (estimated) Jaccard."""

    of: str
    kind: Literal["exact", "near"]
    similarity: float


@dataclass
class Fingerprints:
    """Everything the index needs about a batch of rows, as flat numpy arrays."""

    norm_hashes: np.ndarray  # (n,) uint64: exact-tier keys
    numbers: np.ndarray  # (n, NUMBER_SLOTS) uint32: number-guard sets
    hashvalues: np.ndarray  # (n, num_perm) uint32: MinHash signatures

    def __len__(self) -> int:
        return len(self.norm_hashes)


# ---------------------------------------------------------------------------------------------
# Shingle hashing (vectorised)

# Polynomial substring hash mod 2^64: h(s..e) = sum c_j P^(e-1-j). With prefix sums of
# c_j * P^-j (P is odd, so invertible mod 2^64), any substring's hash is one subtraction and
# one multiplication, so all shingles of a batch hash in a handful of numpy passes.
_P = 0x9E3779B97F4A7C15  # odd, with dense bits (a sparse base such as FNV's collides)
_P_INV = pow(_P, -1, 1 << 64)
_powers_lock = threading.Lock()
_pow: np.ndarray = np.ones(1, dtype=np.uint64)
_ipow: np.ndarray = np.ones(1, dtype=np.uint64)


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    global _pow, _ipow
    if len(_pow) < n:
        with _powers_lock:
            if len(_pow) < n:
                size = max(n, 2 * len(_pow), 1 << 16)
                p = np.full(size, _P, dtype=np.uint64)
                p[0] = 1
                ip = np.full(size, _P_INV, dtype=np.uint64)
                ip[0] = 1
                _ipow = np.cumprod(ip)  # uint64 products wrap: arithmetic mod 2^64
                _pow = np.cumprod(p)
    return _pow, _ipow


def _ranges_per_group(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For groups of sizes ``counts``: (group index, index within group) of every element."""
    total = int(counts.sum())
    group = np.repeat(np.arange(len(counts)), counts)
    firsts = np.cumsum(counts) - counts
    within = np.arange(total) - np.repeat(firsts, counts)
    return group, within


def _shingle_hashes(norms: Sequence[str], settings: DedupSettings) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every shingle of every text, and the shingle count of each text.

    A text shorter than one shingle is a single shingle (itself); an empty text has none.
    """
    joined = " ".join(norms)  # the space keeps word boundaries between texts too
    cps = np.frombuffer(joined.encode("utf-32-le"), dtype="<u4").astype(np.uint64)
    lengths = np.fromiter((len(s) for s in norms), dtype=np.int64, count=len(norms))
    offsets = np.cumsum(lengths + 1) - (lengths + 1)
    n = settings.ngram
    if settings.shingle == "char":
        counts = np.where(lengths >= n, lengths - n + 1, (lengths > 0).astype(np.int64))
        group, within = _ranges_per_group(counts)
        starts = offsets[group] + within
        ends = starts + np.minimum(lengths, n)[group]
    else:
        is_word = cps != 32
        edges = np.diff(np.concatenate(([False], is_word, [False])).astype(np.int8))
        wstart = np.flatnonzero(edges == 1)
        wend = np.flatnonzero(edges == -1)
        wtext = np.searchsorted(offsets, wstart, side="right") - 1
        nwords = np.bincount(wtext, minlength=len(norms)).astype(np.int64)
        first_word = np.cumsum(nwords) - nwords
        counts = np.where(nwords >= n, nwords - n + 1, (nwords > 0).astype(np.int64))
        group, within = _ranges_per_group(counts)
        first = first_word[group] + within
        starts = wstart[first]
        ends = wend[first + np.minimum(nwords, n)[group] - 1]
    if len(starts) == 0:
        return np.zeros(0, dtype=np.uint32), counts
    pw, ipw = _powers(len(cps) + 1)
    prefix = np.zeros(len(cps) + 1, dtype=np.uint64)
    np.cumsum(cps * ipw[: len(cps)], out=prefix[1:])
    h = _fmix64((prefix[ends] - prefix[starts]) * pw[ends - 1])
    return (h >> np.uint64(32)).astype(np.uint32), counts


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer: spreads the polynomial's structure over all bits
    before the top 32 are kept."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer: the pre-mix datasketch's affine32 scheme applies."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


@lru_cache(maxsize=16)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's own (a, b) permutation parameters for this num_perm and seed."""
    a, b = MinHash(num_perm=num_perm, seed=seed, scheme=_SCHEME).permutations
    return a.astype(np.uint32), b.astype(np.uint32)


_BLOCK_SHINGLES = 16384  # (shingles x num_perm) uint32 work block: 8 MB at 128 permutations


def _minhash_rows(hashes: np.ndarray, counts: np.ndarray, settings: DedupSettings) -> np.ndarray:
    """Min over each row's shingles of a*fmix(h)+b mod 2^32, for every permutation."""
    a, b = _permutations(settings.num_perm, settings.seed)
    out = np.full((len(counts), settings.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    mixed = _fmix32(hashes)
    ends = np.cumsum(counts)
    starts = ends - counts
    a_col, b_col = a[:, None], b[:, None]
    # Layout (num_perm, shingles): numpy's reduceat along the contiguous last axis is ~40x
    # faster than along axis 0, which made the permutation step the bottleneck.
    buf = np.empty((settings.num_perm, _BLOCK_SHINGLES), dtype=np.uint32)
    row = 0
    while row < len(counts):
        # Take as many whole rows as fit in one block (at least one, however long).
        stop = int(np.searchsorted(ends, starts[row] + _BLOCK_SHINGLES, side="right"))
        stop = max(stop, row + 1)
        lo, hi = int(starts[row]), int(ends[stop - 1])
        if hi > lo:
            work = buf[:, : hi - lo] if hi - lo <= _BLOCK_SHINGLES else None
            work = np.multiply(a_col, mixed[None, lo:hi], out=work)
            np.add(work, b_col, out=work)
            rows = np.arange(row, stop)
            nonempty = rows[counts[row:stop] > 0]
            out[nonempty] = np.minimum.reduceat(work, starts[nonempty] - lo, axis=1).T
        row = stop
    return out


# ---------------------------------------------------------------------------------------------
# Public signature API


def signature(text: str, settings: DedupSettings | None = None) -> np.ndarray:
    """MinHash hashvalues (uint32, ``num_perm``) of one text, through datasketch's MinHash.

    The reference path: shingle hashes go through ``MinHash.update_batch``; the batch path
    (:func:`signatures`) must give the same values.
    """
    settings = settings or DedupSettings()
    hashes, _ = _shingle_hashes([normalize(text)], settings)
    m = MinHash(num_perm=settings.num_perm, seed=settings.seed, hashfunc=int, scheme=_SCHEME)
    m.update_batch(hashes)
    return m.hashvalues


def fingerprints(texts: Sequence[str], settings: DedupSettings | None = None) -> Fingerprints:
    """Exact keys, number keys and signatures of a batch (vectorised; use batches of ~1-10k)."""
    settings = settings or DedupSettings()
    norms = [normalize(t) for t in texts]
    norm_hashes = np.fromiter((_hash64(s) for s in norms), dtype=np.uint64, count=len(norms))
    nums = np.zeros((len(norms), NUMBER_SLOTS), dtype=np.uint32)
    for i, s in enumerate(norms):
        nums[i] = _numbers_of_norm(s)
    if not norms:
        empty = np.zeros((0, settings.num_perm), dtype=np.uint32)
        return Fingerprints(norm_hashes, nums, empty)
    hashes, counts = _shingle_hashes(norms, settings)
    return Fingerprints(norm_hashes, nums, _minhash_rows(hashes, counts, settings))


def signatures(texts: Sequence[str], settings: DedupSettings | None = None) -> np.ndarray:
    """(len(texts), num_perm) uint32 signatures, equal row by row to :func:`signature`."""
    return fingerprints(texts, settings).hashvalues


def fingerprint(
    text: str, settings: DedupSettings | None = None
) -> tuple[int, np.ndarray, np.ndarray]:
    """(norm_hash, hashvalues, numbers) of one text: the arguments of
    :meth:`Deduper.check_and_add_signature`."""
    fp = fingerprints([text], settings)
    return int(fp.norm_hashes[0]), fp.hashvalues[0], fp.numbers[0]


# ---------------------------------------------------------------------------------------------
# The index


@lru_cache(maxsize=64)
def _lsh_params(threshold: float, num_perm: int, fp_weight: float) -> tuple[int, int]:
    """(bands, rows) datasketch picks for these settings, cached: its search integrates the
    S-curve for every layout, which is slow enough to matter when building many indexes."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(fp_weight, 1.0 - fp_weight))
    return lsh.b, lsh.r


class Deduper:
    """Keeps the first occurrence; reports later rows that duplicate a kept one.

    Thread-safe: every public method holds one lock, so ``check_and_add`` is atomic within a
    process. Rows are identified internally by insertion order; ``key`` is only stored so a
    duplicate can name the row it duplicates (keys need not be unique, and a row is never
    reported as a duplicate of a kept row with the same key). ``capacity`` preallocates
    signature storage for that many kept rows; it doubles when full.
    """

    def __init__(self, settings: DedupSettings | None = None, capacity: int = 1024) -> None:
        self.settings = settings or DedupSettings()
        s = self.settings
        self.bands, self.rows_per_band = _lsh_params(s.threshold, s.num_perm, s.fp_weight)
        self._lsh = MinHashLSH(num_perm=s.num_perm, params=(self.bands, self.rows_per_band))
        self._exact: dict[int, int] = {}
        self._keys: list[str] = []
        self._sigs = np.empty((max(capacity, 1), s.num_perm), dtype=np.uint32)
        self._numbers = np.zeros((max(capacity, 1), NUMBER_SLOTS), dtype=np.uint32)
        self._lock = threading.Lock()
        self.candidates_checked = 0  # LSH candidates verified so far (cost diagnostics)

    def __len__(self) -> int:
        return len(self._keys)

    # -- text API ---------------------------------------------------------------------------

    def check(self, key: str, text: str) -> Duplicate | None:
        """The kept row ``text`` duplicates, or None. Does not add."""
        return self.check_signature(key, *fingerprint(text, self.settings))

    def add(self, key: str, text: str) -> None:
        """Keep ``text`` unconditionally (no check)."""
        self.add_signature(key, *fingerprint(text, self.settings))

    def check_and_add(self, key: str, text: str) -> Duplicate | None:
        """Atomically: return the duplicate it is, or keep it and return None."""
        return self.check_and_add_signature(key, *fingerprint(text, self.settings))

    # -- precomputed API (for an index living apart from the hashing) -----------------------

    def check_signature(
        self, key: str, norm_hash: int, hashvalues: np.ndarray, numbers: np.ndarray | None = None
    ) -> Duplicate | None:
        """:meth:`check` from :func:`fingerprint`'s values (``numbers`` None = unknown:
        the guard then never refuses)."""
        sig = self._as_sig(hashvalues)
        with self._lock:
            return self._check(key, int(norm_hash), sig, self._as_numbers(numbers))

    def add_signature(
        self, key: str, norm_hash: int, hashvalues: np.ndarray, numbers: np.ndarray | None = None
    ) -> None:
        """:meth:`add` from precomputed values."""
        sig = self._as_sig(hashvalues)
        with self._lock:
            self._add(key, int(norm_hash), sig, self._as_numbers(numbers))

    def check_and_add_signature(
        self, key: str, norm_hash: int, hashvalues: np.ndarray, numbers: np.ndarray | None = None
    ) -> Duplicate | None:
        """:meth:`check_and_add` from precomputed values; the Ray actor's entry point."""
        sig = self._as_sig(hashvalues)
        with self._lock:
            dup = self._check(key, int(norm_hash), sig, self._as_numbers(numbers))
            if dup is None:
                self._add(key, int(norm_hash), sig, self._as_numbers(numbers))
            return dup

    # -- internals --------------------------------------------------------------------------

    def _as_sig(self, hashvalues: np.ndarray | Sequence[int]) -> np.ndarray:
        sig = np.asarray(hashvalues)
        if sig.shape != (self.settings.num_perm,):
            raise ValueError(f"expected {self.settings.num_perm} hash values, got {sig.shape}")
        if sig.dtype != np.uint32 and (sig.min() < 0 or sig.max() > 0xFFFFFFFF):
            raise ValueError("hash values out of the affine32 range (another scheme?)")
        return sig.astype(np.uint32, copy=False)

    def _minhash(self, sig: np.ndarray) -> LeanMinHash:
        return LeanMinHash(seed=self.settings.seed, hashvalues=sig, scheme=_SCHEME)

    def _as_numbers(self, numbers: np.ndarray | Sequence[int] | None) -> np.ndarray:
        if numbers is None:
            return np.zeros(NUMBER_SLOTS, dtype=np.uint32)
        nums = np.asarray(numbers)
        if nums.shape != (NUMBER_SLOTS,):
            raise ValueError(f"expected {NUMBER_SLOTS} number slots, got {nums.shape}")
        return nums.astype(np.uint32, copy=False)

    def _check(
        self, key: str, norm_hash: int, sig: np.ndarray, nums: np.ndarray
    ) -> Duplicate | None:
        row = self._exact.get(norm_hash)
        if row is not None and self._keys[row] != key:
            return Duplicate(self._keys[row], "exact", 1.0)
        if not self._keys:
            return None
        cands = self._lsh.query(self._minhash(sig))
        if not cands:
            return None
        ids = np.fromiter(cands, dtype=np.int64, count=len(cands))
        self.candidates_checked += len(ids)
        matches = np.count_nonzero(self._sigs[ids] == sig, axis=1)
        ok = matches >= self.settings.min_matches
        if self.settings.number_guard and nums.any() and ok.any():
            ok[ok] = _numbers_compatible(nums, self._numbers[ids[ok]])
        ids, matches = ids[ok], matches[ok]
        # Most similar kept row; among equals the earliest kept; never the row itself.
        for i in np.lexsort((ids, -matches)):
            of = self._keys[int(ids[i])]
            if of != key:
                return Duplicate(of, "near", float(matches[i]) / self.settings.num_perm)
        return None

    def _add(self, key: str, norm_hash: int, sig: np.ndarray, nums: np.ndarray) -> None:
        row = len(self._keys)
        if row == len(self._sigs):
            self._sigs = np.concatenate([self._sigs, np.empty_like(self._sigs)])
            self._numbers = np.concatenate([self._numbers, np.zeros_like(self._numbers)])
        self._sigs[row] = sig
        self._numbers[row] = nums
        self._keys.append(key)
        self._exact.setdefault(norm_hash, row)
        self._lsh.insert(row, self._minhash(sig), check_duplication=False)


def _numbers_compatible(mine: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """For each row of ``theirs``: is one number set a subset of the other (0 = padding)?

    A rewording may add or drop a number; only a *changed* number (each side has one the
    other lacks) makes two texts different questions.
    """
    eq = theirs[:, :, None] == mine[None, None, :]  # (rows, slots_theirs, slots_mine)
    mine_in_theirs = (eq.any(axis=1) | (mine == 0)[None, :]).all(axis=1)
    theirs_in_mine = (eq.any(axis=2) | (theirs == 0)).all(axis=1)
    return mine_in_theirs | theirs_in_mine


def _batched(items: Iterable[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def dedup(
    items: Iterable[tuple[str, str]],
    settings: DedupSettings | None = None,
    *,
    deduper: Deduper | None = None,
    batch_size: int = 2048,
) -> Iterator[tuple[str, Duplicate | None]]:
    """Stream ``(key, text)`` -> ``(key, None)`` for a kept row, ``(key, Duplicate)`` for a
    dropped one, in input order; the first occurrence is kept.

    Hashing is done ``batch_size`` rows at a time (vectorised), so memory stays bounded by the
    index plus one batch. Pass ``deduper`` to keep deduplicating against an existing index.
    """
    if deduper is None:
        deduper = Deduper(settings)
    elif settings is not None and settings != deduper.settings:
        raise ValueError("settings differ from the given deduper's settings")
    for chunk in _batched(items, batch_size):
        fp = fingerprints([text for _, text in chunk], deduper.settings)
        for i, (key, _) in enumerate(chunk):
            dup = deduper.check_and_add_signature(
                key, int(fp.norm_hashes[i]), fp.hashvalues[i], fp.numbers[i]
            )
            yield key, dup
