"""SIMULATED coder for the verified-code example: a test double, not a model.

`reply(request)` gets an OpenAI chat-completions request body (from the simulator:
``peerflow sim-llm --script examples/verified_code/sim_coder.py:reply``) and answers the way
a coding model asked for one problem of ``data/problems.jsonl`` would: a short sentence and
two fenced ``python`` blocks, first the solution, then the model's own pytest tests
(``def test_...():`` functions that ``from solution import <entry_point>``). The reference
solutions live here and never in the problem file, because prompts are built from that file.

What it reads in the request (the workflow's prompts must contain these markers):

- the problem: a user message with ``Problem <id>: <title>`` (``Problem vc001: Rotate ...``);
- a repair: a user message that contains ``The sandbox reported:`` (then the failure output).
- ``seed`` (an int; absent means 0).

Outcomes. So that one CI run exercises every path of the workflow and of the sandbox, a first
attempt's outcome is drawn from a hash of (problem id, seed), with these rates:

==============  =====  ============================================================
correct          55%   the reference solution and tests that pass against it
wrong_solution   15%   a plausible bug (a small mutation of the reference: an off-by-one,
                       a missed edge case) that fails at least one of the problem's tests
wrong_test        5%   the right solution, but one of the model's tests expects a wrong value
syntax_error      5%   the solution does not compile (a missing colon, an unclosed bracket)
no_code           5%   no fenced code block at all: prose, or code pasted without fences
hostile          15%   the right function plus an attack that runs at import or call time,
                       cycling through `HOSTILE_KINDS`
==============  =====  ============================================================

A repair is correct 70% of the time; otherwise it fails again the way the first attempt did
(another bug or syntax slip where there is one). The same (id, seed) always gives the same
reply. Hostile payloads raise when their attack is blocked, so a contained attack shows up
as a failed run; only ``background_process`` can pass its tests while contained, since
starting a child is allowed and the sandbox's job is to kill it afterwards. An id that is
not in `REFERENCES` gets a stub that raises NotImplementedError.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, NamedTuple

RATES: dict[str, float] = {
    "correct": 0.55,
    "wrong_solution": 0.15,
    "wrong_test": 0.05,
    "syntax_error": 0.05,
    "no_code": 0.05,
    "hostile": 0.15,
}
OUTCOMES: list[str] = list(RATES)
REPAIR_SUCCESS = 0.70
HOSTILE_KINDS: list[str] = [
    "fork_bomb",
    "memory",
    "infinite_loop",
    "print_flood",
    "network",
    "read_secrets",
    "write_outside",
    "background_process",
    "ptrace",
    "setrlimit",
]
SYNTAX_VARIANTS = 2
NO_CODE_VARIANTS = 2
PROBLEM_MARKER = re.compile(r"Problem\s+([A-Za-z0-9_-]+):[ \t]*([^\n]*)")
REPAIR_MARKER = "The sandbox reported:"
_SIGNATURE = re.compile(r"^def\s+([A-Za-z_]\w*)\s*\(", re.M)


class Reference(NamedTuple):
    """One problem's reference: correct code, its plausible bugs and the model's own tests.

    `bugs` are (old, new) text replacements, each applied alone to `code`; `checks` are
    (call, expected) pairs the simulated model writes as its tests.
    """

    code: str
    bugs: tuple[tuple[str, str], ...]
    checks: tuple[tuple[str, str], ...]

    @property
    def entry_point(self) -> str:
        match = _SIGNATURE.search(self.code)
        assert match is not None
        return match.group(1)


# --- the references, one per problem of data/problems.jsonl ---------------------------------
REFERENCES: dict[str, Reference] = {
    "vc001": Reference(
        code="""\
def rotate_left(items: list[int], k: int) -> list[int]:
    if not items:
        return []
    k %= len(items)
    return items[k:] + items[:k]
""",
        bugs=(
            ("k %= len(items)", "k = min(k, len(items))"),
            ("return items[k:] + items[:k]", "return items[-k:] + items[:-k]"),
        ),
        checks=(
            ("rotate_left([10, 20, 30, 40], 1)", "[20, 30, 40, 10]"),
            ("rotate_left([5, 6], 7)", "[6, 5]"),
            ("rotate_left([], 0)", "[]"),
        ),
    ),
    "vc002": Reference(
        code="""\
def second_largest(nums: list[int]) -> int | None:
    distinct = sorted(set(nums), reverse=True)
    if len(distinct) < 2:
        return None
    return distinct[1]
""",
        bugs=(
            ("sorted(set(nums), reverse=True)", "sorted(nums, reverse=True)"),
            ("if len(distinct) < 2:", "if len(distinct) < 1:"),
        ),
        checks=(
            ("second_largest([1, 2, 3])", "2"),
            ("second_largest([4, 4, 1, 1])", "1"),
            ("second_largest([9])", "None"),
        ),
    ),
    "vc003": Reference(
        code="""\
def brackets_balanced(text: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    for ch in text:
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return False
    return not stack
""",
        bugs=(
            ("return not stack", "return True"),
            ("if not stack or stack.pop() != pairs[ch]:", "if stack and stack.pop() != pairs[ch]:"),
        ),
        checks=(
            ("brackets_balanced('{[()]}')", "True"),
            ("brackets_balanced('(()')", "False"),
            ("brackets_balanced(')(')", "False"),
        ),
    ),
    "vc004": Reference(
        code="""\
def digital_root(n: int) -> int:
    n = abs(n)
    while n >= 10:
        n = sum(int(d) for d in str(n))
    return n
""",
        bugs=(
            ("while n >= 10:", "while n > 10:"),
            ("n = abs(n)", "n = max(n, 0)"),
        ),
        checks=(
            ("digital_root(493193)", "2"),
            ("digital_root(9)", "9"),
            ("digital_root(-7)", "7"),
        ),
    ),
    "vc005": Reference(
        code="""\
def run_length_encode(text: str) -> str:
    out = []
    i = 0
    while i < len(text):
        j = i
        while j < len(text) and text[j] == text[i]:
            j += 1
        out.append(f"{text[i]}{j - i}")
        i = j
    return "".join(out)
""",
        bugs=(
            (
                'out.append(f"{text[i]}{j - i}")',
                'out.append(f"{text[i]}{j - i}" if j - i > 1 else text[i])',
            ),
            ("text[j] == text[i]", "text[j].lower() == text[i].lower()"),
        ),
        checks=(
            ("run_length_encode('hello')", "'h1e1l2o1'"),
            ("run_length_encode('111')", "'13'"),
            ("run_length_encode('ab')", "'a1b1'"),
        ),
    ),
    "vc006": Reference(
        code="""\
def normalize_title(text: str) -> str:
    return " ".join(word[:1].upper() + word[1:].lower() for word in text.split())
""",
        bugs=(
            ("word[:1].upper() + word[1:].lower()", "word.title()"),
            ("text.split()", 'text.split(" ")'),
        ),
        checks=(
            ("normalize_title('mIxEd CaSe')", "'Mixed Case'"),
            ("normalize_title('one')", "'One'"),
            ("normalize_title('')", "''"),
        ),
    ),
    "vc007": Reference(
        code="""\
def count_pairs_with_sum(nums: list[int], target: int) -> int:
    seen: dict[int, int] = {}
    count = 0
    for x in nums:
        count += seen.get(target - x, 0)
        seen[x] = seen.get(x, 0) + 1
    return count
""",
        bugs=(
            (
                "        count += seen.get(target - x, 0)\n        seen[x] = seen.get(x, 0) + 1",
                "        seen[x] = seen.get(x, 0) + 1\n        count += seen.get(target - x, 0)",
            ),
            ("seen[x] = seen.get(x, 0) + 1", "seen[x] = 1"),
        ),
        checks=(
            ("count_pairs_with_sum([1, 9, 5, 5], 10)", "2"),
            ("count_pairs_with_sum([4, 4], 8)", "1"),
            ("count_pairs_with_sum([1, 2], 10)", "0"),
        ),
    ),
    "vc008": Reference(
        code="""\
def window_sums(nums: list[int], width: int) -> list[int]:
    if width <= 0 or width > len(nums):
        return []
    total = sum(nums[:width])
    sums = [total]
    for i in range(width, len(nums)):
        total += nums[i] - nums[i - width]
        sums.append(total)
    return sums
""",
        bugs=(
            ("for i in range(width, len(nums)):", "for i in range(width, len(nums) - 1):"),
            ("if width <= 0 or width > len(nums):", "if width > len(nums):"),
        ),
        checks=(
            ("window_sums([10, 20, 30], 1)", "[10, 20, 30]"),
            ("window_sums([1, 1, 1, 1], 2)", "[2, 2, 2]"),
            ("window_sums([3], 2)", "[]"),
        ),
    ),
    "vc009": Reference(
        code="""\
def merge_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    merged = dict(a)
    for key, value in b.items():
        merged[key] = merged.get(key, 0) + value
    return {key: value for key, value in merged.items() if value != 0}
""",
        bugs=(
            ("if value != 0", "if value > 0"),
            ("merged = dict(a)", "merged = a"),
        ),
        checks=(
            ("merge_counts({'p': 2}, {'q': 1})", "{'p': 2, 'q': 1}"),
            ("merge_counts({'p': 2}, {'p': -2, 'q': 0})", "{}"),
            ("merge_counts({}, {'r': 4})", "{'r': 4}"),
        ),
    ),
    "vc010": Reference(
        code="""\
def days_in_month(year: int, month: int) -> int:
    if not 1 <= month <= 12:
        return 0
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31
""",
        bugs=(
            ("(year % 100 != 0 or year % 400 == 0)", "year % 100 != 0"),
            ("month in (4, 6, 9, 11)", "month in (4, 6, 9)"),
        ),
        checks=(
            ("days_in_month(2024, 9)", "30"),
            ("days_in_month(2100, 2)", "28"),
            ("days_in_month(1600, 2)", "29"),
        ),
    ),
    "vc011": Reference(
        code="""\
def caesar_shift(text: str, k: int) -> str:
    out = []
    for ch in text:
        if "a" <= ch <= "z":
            out.append(chr((ord(ch) - ord("a") + k) % 26 + ord("a")))
        elif "A" <= ch <= "Z":
            out.append(chr((ord(ch) - ord("A") + k) % 26 + ord("A")))
        else:
            out.append(ch)
    return "".join(out)
""",
        bugs=(
            ('chr((ord(ch) - ord("a") + k) % 26 + ord("a"))', "chr(ord(ch) + k)"),
            ('if "a" <= ch <= "z":', "if ch.isalpha() and ch.islower():"),
        ),
        checks=(
            ("caesar_shift('abc', 26)", "'abc'"),
            ("caesar_shift('Yes!', 2)", "'Agu!'"),
            ("caesar_shift('b', -3)", "'y'"),
        ),
    ),
    "vc012": Reference(
        code="""\
def chunk(items: list[int], size: int) -> list[list[int]]:
    if size < 1:
        return []
    return [items[i : i + size] for i in range(0, len(items), size)]
""",
        bugs=(
            ("range(0, len(items), size)", "range(0, len(items) - size + 1, size)"),
            ("if size < 1:", "if size < 0:"),
        ),
        checks=(
            ("chunk([9, 8, 7], 2)", "[[9, 8], [7]]"),
            ("chunk([1], 1)", "[[1]]"),
            ("chunk([], 1)", "[]"),
        ),
    ),
    "vc013": Reference(
        code="""\
def char_classes(text: str) -> dict[str, int]:
    counts = {"upper": 0, "lower": 0, "digit": 0, "other": 0}
    for ch in text:
        if ch.isupper():
            counts["upper"] += 1
        elif ch.islower():
            counts["lower"] += 1
        elif ch.isdigit():
            counts["digit"] += 1
        else:
            counts["other"] += 1
    return counts
""",
        bugs=(
            ("if ch.isupper():", "if ch.isupper() and ch.isascii():"),
            (
                '        else:\n            counts["other"] += 1',
                '        elif not ch.isspace():\n            counts["other"] += 1',
            ),
        ),
        checks=(
            ("char_classes('aB3?')", "{'upper': 1, 'lower': 1, 'digit': 1, 'other': 1}"),
            ("char_classes('zz')", "{'upper': 0, 'lower': 2, 'digit': 0, 'other': 0}"),
            ("char_classes(' ')", "{'upper': 0, 'lower': 0, 'digit': 0, 'other': 1}"),
        ),
    ),
    "vc014": Reference(
        code="""\
def dedupe_adjacent(items: list[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        if not out or out[-1] != item:
            out.append(item)
    return out
""",
        bugs=(
            ("if not out or out[-1] != item:", "if item not in out:"),
            ("if not out or out[-1] != item:", "if not out or out[-1].lower() != item.lower():"),
        ),
        checks=(
            ("dedupe_adjacent(['k', 'k', 'l'])", "['k', 'l']"),
            ("dedupe_adjacent(['m', 'n', 'm'])", "['m', 'n', 'm']"),
            ("dedupe_adjacent([])", "[]"),
        ),
    ),
    "vc015": Reference(
        code="""\
def evens_first(nums: list[int]) -> list[int]:
    evens = [n for n in nums if n % 2 == 0]
    odds = [n for n in nums if n % 2 != 0]
    return evens + odds
""",
        bugs=(
            ("if n % 2 == 0]", "if n % 2 == 0 and n != 0]"),
            ("return evens + odds", "return sorted(evens) + sorted(odds)"),
        ),
        checks=(
            ("evens_first([5, 8, 6, 7])", "[8, 6, 5, 7]"),
            ("evens_first([2])", "[2]"),
            ("evens_first([9, 11])", "[9, 11]"),
        ),
    ),
    "vc016": Reference(
        code="""\
def hamming_distance(a: str, b: str) -> int:
    if len(a) != len(b):
        return -1
    return sum(1 for x, y in zip(a, b) if x != y)
""",
        bugs=(
            ("    if len(a) != len(b):\n        return -1\n", ""),
            ("if x != y", "if x.lower() != y.lower()"),
        ),
        checks=(
            ("hamming_distance('aaaa', 'bbbb')", "4"),
            ("hamming_distance('x', '')", "-1"),
            ("hamming_distance('same', 'same')", "0"),
        ),
    ),
    "vc017": Reference(
        code="""\
def initials(name: str) -> str:
    return "".join(word[0].upper() + "." for word in name.split())
""",
        bugs=(
            ("name.split()", 'name.split(" ")'),
            ('"".join', '" ".join'),
        ),
        checks=(
            ("initials('alan mathison turing')", "'A.M.T.'"),
            ("initials('Bo')", "'B.'"),
            ("initials('')", "''"),
        ),
    ),
    "vc018": Reference(
        code="""\
def is_arithmetic(nums: list[int]) -> bool:
    if len(nums) < 3:
        return True
    step = nums[1] - nums[0]
    return all(nums[i + 1] - nums[i] == step for i in range(len(nums) - 1))
""",
        bugs=(
            ("range(len(nums) - 1)", "range(len(nums) - 2)"),
            ("step = nums[1] - nums[0]", "step = abs(nums[1] - nums[0])"),
        ),
        checks=(
            ("is_arithmetic([10, 7, 4])", "True"),
            ("is_arithmetic([0, 0, 1])", "False"),
            ("is_arithmetic([1, 5])", "True"),
        ),
    ),
    "vc019": Reference(
        code="""\
def triangle_kind(a: int, b: int, c: int) -> str:
    x, y, z = sorted((a, b, c))
    if x <= 0 or x + y <= z:
        return "invalid"
    if x == z:
        return "equilateral"
    if x == y or y == z:
        return "isosceles"
    return "scalene"
""",
        bugs=(
            ("x + y <= z", "x + y < z"),
            ("if x == y or y == z:", "if x == y:"),
        ),
        checks=(
            ("triangle_kind(2, 3, 4)", "'scalene'"),
            ("triangle_kind(7, 7, 7)", "'equilateral'"),
            ("triangle_kind(1, 1, 2)", "'invalid'"),
        ),
    ),
    "vc020": Reference(
        code="""\
import re


def longest_word(text: str) -> str:
    best = ""
    for word in re.findall(r"[A-Za-z]+", text):
        if len(word) > len(best):
            best = word
    return best
""",
        bugs=(
            ("if len(word) > len(best):", "if len(word) >= len(best):"),
            ('r"[A-Za-z]+"', 'r"\\S+"'),
        ),
        checks=(
            ("longest_word('hi there')", "'there'"),
            ("longest_word('ab cd')", "'ab'"),
            ("longest_word('...')", "''"),
        ),
    ),
    "vc021": Reference(
        code="""\
def merge_intervals(intervals: list[list[int]]) -> list[list[int]]:
    merged: list[list[int]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged
""",
        bugs=(
            ("merged[-1][1] = max(merged[-1][1], end)", "merged[-1][1] = end"),
            ("start <= merged[-1][1]", "start < merged[-1][1]"),
        ),
        checks=(
            ("merge_intervals([[4, 5], [1, 2]])", "[[1, 2], [4, 5]]"),
            ("merge_intervals([[0, 0], [0, 0]])", "[[0, 0]]"),
            ("merge_intervals([[1, 4], [2, 3]])", "[[1, 4]]"),
        ),
    ),
    "vc022": Reference(
        code="""\
import re

_DURATION = re.compile(r"(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")


def parse_duration(text: str) -> int:
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        return -1
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds
""",
        bugs=(
            ("if not text or match is None:", "if match is None:"),
            ("_DURATION.fullmatch(text)", "_DURATION.match(text)"),
        ),
        checks=(
            ("parse_duration('3m')", "180"),
            ("parse_duration('1h1m1s')", "3661"),
            ("parse_duration('s')", "-1"),
        ),
    ),
    "vc023": Reference(
        code="""\
import re
from collections import Counter


def top_words(text: str, n: int) -> list[str]:
    if n <= 0:
        return []
    counts = Counter(re.findall(r"[a-z]+", text.lower()))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [word for word, _ in ranked[:n]]
""",
        bugs=(
            ("key=lambda item: (-item[1], item[0])", "key=lambda item: -item[1]"),
            ('re.findall(r"[a-z]+", text.lower())', "text.lower().split()"),
        ),
        checks=(
            ("top_words('a a b', 1)", "['a']"),
            ("top_words('Zed zed apple', 2)", "['zed', 'apple']"),
            ("top_words('', 1)", "[]"),
        ),
    ),
    "vc024": Reference(
        code="""\
def spiral_order(matrix: list[list[int]]) -> list[int]:
    out: list[int] = []
    if not matrix or not matrix[0]:
        return out
    top, bottom, left, right = 0, len(matrix) - 1, 0, len(matrix[0]) - 1
    while top <= bottom and left <= right:
        for c in range(left, right + 1):
            out.append(matrix[top][c])
        for r in range(top + 1, bottom + 1):
            out.append(matrix[r][right])
        if top < bottom and left < right:
            for c in range(right - 1, left - 1, -1):
                out.append(matrix[bottom][c])
            for r in range(bottom - 1, top, -1):
                out.append(matrix[r][left])
        top, bottom, left, right = top + 1, bottom - 1, left + 1, right - 1
    return out
""",
        bugs=(
            ("if top < bottom and left < right:", "if top <= bottom and left <= right:"),
            ("for r in range(bottom - 1, top, -1):", "for r in range(bottom - 1, top - 1, -1):"),
        ),
        checks=(
            ("spiral_order([[1, 2], [3, 4]])", "[1, 2, 4, 3]"),
            ("spiral_order([[5], [6]])", "[5, 6]"),
            ("spiral_order([])", "[]"),
        ),
    ),
    "vc025": Reference(
        code="""\
def rotate_clockwise(matrix: list[list[int]]) -> list[list[int]]:
    if not matrix:
        return []
    rows, cols = len(matrix), len(matrix[0])
    return [[matrix[rows - 1 - r][c] for r in range(rows)] for c in range(cols)]
""",
        bugs=(
            ("matrix[rows - 1 - r][c]", "matrix[r][c]"),
            ("for c in range(cols)]", "for c in range(rows)]"),
        ),
        checks=(
            ("rotate_clockwise([[1, 0], [0, 1]])", "[[0, 1], [1, 0]]"),
            ("rotate_clockwise([[1, 2]])", "[[1], [2]]"),
            ("rotate_clockwise([])", "[]"),
        ),
    ),
    "vc026": Reference(
        code="""\
from itertools import zip_longest


def compare_versions(a: str, b: str) -> int:
    for x, y in zip_longest(a.split("."), b.split("."), fillvalue="0"):
        if int(x) != int(y):
            return 1 if int(x) > int(y) else -1
    return 0
""",
        bugs=(
            (
                "if int(x) != int(y):\n            return 1 if int(x) > int(y) else -1",
                "if x != y:\n            return 1 if x > y else -1",
            ),
            (
                'zip_longest(a.split("."), b.split("."), fillvalue="0")',
                'zip(a.split("."), b.split("."))',
            ),
        ),
        checks=(
            ("compare_versions('1.0', '1.0.0.0')", "0"),
            ("compare_versions('0.9', '0.10')", "-1"),
            ("compare_versions('4.2.1', '4.2')", "1"),
        ),
    ),
    "vc027": Reference(
        code="""\
def prime_factors(n: int) -> list[int]:
    factors: list[int] = []
    if n < 2:
        return factors
    d = 2
    while d * d <= n:
        while n % d == 0:
            factors.append(d)
            n //= d
        d += 1
    if n > 1:
        factors.append(n)
    return factors
""",
        bugs=(
            ("    if n > 1:\n        factors.append(n)\n", ""),
            ("while d * d <= n:", "while d * d < n:"),
        ),
        checks=(
            ("prime_factors(60)", "[2, 2, 3, 5]"),
            ("prime_factors(13)", "[13]"),
            ("prime_factors(-5)", "[]"),
        ),
    ),
    "vc028": Reference(
        code="""\
import re


def day_of_year(date: str) -> int:
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", date):
        return -1
    year, month, day = (int(part) for part in date.split("-"))
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    lengths = [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    if year < 1 or not 1 <= month <= 12 or not 1 <= day <= lengths[month - 1]:
        return -1
    return sum(lengths[: month - 1]) + day
""",
        bugs=(
            ("(year % 100 != 0 or year % 400 == 0)", "year % 100 != 0"),
            ("sum(lengths[: month - 1]) + day", "sum(lengths[:month]) + day"),
        ),
        checks=(
            ("day_of_year('2021-02-01')", "32"),
            ("day_of_year('2020-07-04')", "186"),
            ("day_of_year('2021-04-31')", "-1"),
        ),
    ),
    "vc029": Reference(
        code="""\
def fewest_stamps(values: list[int], postage: int) -> int:
    if postage < 0:
        return -1
    best = [0] + [-1] * postage
    for amount in range(1, postage + 1):
        for v in values:
            if v <= amount and best[amount - v] != -1:
                candidate = best[amount - v] + 1
                if best[amount] == -1 or candidate < best[amount]:
                    best[amount] = candidate
    return best[postage]
""",
        bugs=(
            ("if best[amount] == -1 or candidate < best[amount]:", "if best[amount] == -1:"),
            ("best = [0] + [-1] * postage", "best = [0] * (postage + 1)"),
        ),
        checks=(
            ("fewest_stamps([2, 5], 9)", "3"),
            ("fewest_stamps([3], 10)", "-1"),
            ("fewest_stamps([1], 0)", "0"),
        ),
    ),
    "vc030": Reference(
        code="""\
def balance_index(nums: list[int]) -> int:
    total = sum(nums)
    left = 0
    for i in range(len(nums) + 1):
        if 2 * left == total:
            return i
        if i < len(nums):
            left += nums[i]
    return -1
""",
        bugs=(
            ("for i in range(len(nums) + 1):", "for i in range(len(nums)):"),
            ("if 2 * left == total:", "if left == total // 2:"),
        ),
        checks=(
            ("balance_index([4, 1, 3])", "1"),
            ("balance_index([1, 2, 4])", "-1"),
            ("balance_index([0, 0])", "0"),
        ),
    ),
    "vc031": Reference(
        code="""\
def parse_settings(text: str) -> dict[str, str]:
    settings: dict[str, str] = {}
    for entry in text.split(";"):
        key, sep, value = entry.partition("=")
        key = key.strip()
        if sep and key:
            settings[key] = value.strip()
    return settings
""",
        bugs=(
            ('entry.partition("=")', 'entry.rpartition("=")'),
            ("if sep and key:", "if sep:"),
        ),
        checks=(
            ("parse_settings('x=1;y=2')", "{'x': '1', 'y': '2'}"),
            ("parse_settings('k=a=b')", "{'k': 'a=b'}"),
            ("parse_settings('junk')", "{}"),
        ),
    ),
    "vc032": Reference(
        code="""\
def covered_length(intervals: list[tuple[int, int]]) -> int:
    total = 0
    current_start = current_end = None
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total
""",
        bugs=(
            ("sorted(i for i in intervals if i[1] > i[0])", "sorted(intervals)"),
            ("current_end = max(current_end, end)", "current_end = end"),
        ),
        checks=(
            ("covered_length([(0, 5)])", "5"),
            ("covered_length([(0, 2), (4, 6)])", "4"),
            ("covered_length([(3, 1)])", "0"),
        ),
    ),
    "vc033": Reference(
        code="""\
def mat_mul(a: list[list[int]], b: list[list[int]]) -> list[list[int]]:
    if not a or not b or not a[0] or not b[0] or len(a[0]) != len(b):
        return []
    cols = len(b[0])
    return [[sum(row[k] * b[k][j] for k in range(len(b))) for j in range(cols)] for row in a]
""",
        bugs=(
            ("row[k] * b[k][j]", "row[k] * b[j][k]"),
            ("len(a[0]) != len(b)", "len(a) != len(b[0])"),
        ),
        checks=(
            ("mat_mul([[2]], [[3]])", "[[6]]"),
            ("mat_mul([[1, 1]], [[1], [1]])", "[[2]]"),
            ("mat_mul([[1, 2]], [[3, 4]])", "[]"),
        ),
    ),
    "vc034": Reference(
        code="""\
def next_same_digits(n: int) -> int:
    if n <= 0:
        return -1
    digits = list(str(n))
    i = len(digits) - 2
    while i >= 0 and digits[i] >= digits[i + 1]:
        i -= 1
    if i < 0:
        return -1
    j = len(digits) - 1
    while digits[j] <= digits[i]:
        j -= 1
    digits[i], digits[j] = digits[j], digits[i]
    digits[i + 1 :] = reversed(digits[i + 1 :])
    return int("".join(digits))
""",
        bugs=(
            (
                "while i >= 0 and digits[i] >= digits[i + 1]:",
                "while i >= 0 and digits[i] > digits[i + 1]:",
            ),
            (
                "digits[i + 1 :] = reversed(digits[i + 1 :])",
                "digits[i + 1 :] = sorted(digits[i + 1 :], reverse=True)",
            ),
        ),
        checks=(
            ("next_same_digits(123)", "132"),
            ("next_same_digits(321)", "-1"),
            ("next_same_digits(1020)", "1200"),
        ),
    ),
    "vc035": Reference(
        code="""\
def flatten_ints(nested: list) -> list[int]:
    out: list[int] = []
    for item in nested:
        if isinstance(item, list):
            out.extend(flatten_ints(item))
        else:
            out.append(item)
    return out
""",
        bugs=(
            ("out.extend(flatten_ints(item))", "out.extend(item)"),
            ("if isinstance(item, list):", "if isinstance(item, list) and item:"),
        ),
        checks=(
            ("flatten_ints([[1], 2])", "[1, 2]"),
            ("flatten_ints([[[]]])", "[]"),
            ("flatten_ints([3, [4, [5]]])", "[3, 4, 5]"),
        ),
    ),
    "vc036": Reference(
        code="""\
import re


def rle_decode(code: str) -> str | None:
    if not re.fullmatch(r"(?:[^0-9][0-9]+)*", code):
        return None
    return "".join(ch * int(count) for ch, count in re.findall(r"([^0-9])([0-9]+)", code))
""",
        bugs=(
            ('r"(?:[^0-9][0-9]+)*"', 'r"(?:[^0-9][0-9]*)*"'),
            ('([0-9]+)"', '([0-9])"'),
        ),
        checks=(
            ("rle_decode('z2')", "'zz'"),
            ("rle_decode('q1r0')", "'q'"),
            ("rle_decode('7')", "None"),
        ),
    ),
    "vc037": Reference(
        code="""\
def final_balance(operations: list[str]) -> int:
    balance = 0
    for op in operations:
        parts = op.split()
        if len(parts) != 2 or not (parts[1].isascii() and parts[1].isdigit()):
            continue
        verb, amount = parts[0], int(parts[1])
        if verb == "deposit":
            balance += amount
        elif verb == "withdraw" and amount <= balance:
            balance -= amount
    return balance
""",
        bugs=(
            ('elif verb == "withdraw" and amount <= balance:', 'elif verb == "withdraw":'),
            ("and amount <= balance", "and amount < balance"),
        ),
        checks=(
            ("final_balance(['deposit 20', 'withdraw 5', 'withdraw 5'])", "10"),
            ("final_balance(['withdraw 1', 'deposit 1'])", "1"),
            ("final_balance(['deposit'])", "0"),
        ),
    ),
    "vc038": Reference(
        code="""\
def best_window_sum(changes: list[int]) -> int:
    if not changes:
        return 0
    best = current = changes[0]
    for x in changes[1:]:
        current = max(x, current + x)
        best = max(best, current)
    return best
""",
        bugs=(
            ("best = current = changes[0]", "best = current = 0"),
            ("current = max(x, current + x)", "current = current + x"),
        ),
        checks=(
            ("best_window_sum([1, 2, 3])", "6"),
            ("best_window_sum([-5, -2])", "-2"),
            ("best_window_sum([4, -10, 4])", "4"),
        ),
    ),
    "vc039": Reference(
        code="""\
DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def to_base(n: int, base: int) -> str:
    if not 2 <= base <= 36:
        return ""
    if n == 0:
        return "0"
    sign = "-" if n < 0 else ""
    n = abs(n)
    out = []
    while n:
        n, r = divmod(n, base)
        out.append(DIGITS[r])
    return sign + "".join(reversed(out))
""",
        bugs=(
            ('sign + "".join(reversed(out))', '"".join(reversed(out))'),
            ('"".join(reversed(out))', '"".join(out)'),
        ),
        checks=(
            ("to_base(8, 8)", "'10'"),
            ("to_base(-1, 2)", "'-1'"),
            ("to_base(31, 16)", "'1f'"),
        ),
    ),
    "vc040": Reference(
        code="""\
def count_regions(grid: list[str]) -> int:
    rows = len(grid)
    cols = len(grid[0]) if rows else 0
    seen = set()
    regions = 0
    for r in range(rows):
        for c in range(cols):
            if grid[r][c] != "#" or (r, c) in seen:
                continue
            regions += 1
            stack = [(r, c)]
            seen.add((r, c))
            while stack:
                y, x = stack.pop()
                for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                    inside = 0 <= ny < rows and 0 <= nx < cols
                    if inside and grid[ny][nx] == "#" and (ny, nx) not in seen:
                        seen.add((ny, nx))
                        stack.append((ny, nx))
    return regions
""",
        bugs=(
            ("((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1))", "((y + 1, x), (y, x + 1))"),
            ('if grid[r][c] != "#" or (r, c) in seen:', 'if grid[r][c] != "#":'),
        ),
        checks=(
            ("count_regions(['##', '##'])", "1"),
            ("count_regions(['#.', '.#'])", "2"),
            ("count_regions(['..'])", "0"),
        ),
    ),
    "vc041": Reference(
        code="""\
NAMES = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def weekday_name(date: str) -> str:
    year, month, day = (int(part) for part in date.split("-"))
    if month < 3:
        # Count March as the first month, so the leap day ends the counting year.
        year -= 1
        month += 12
    days = 365 * year + year // 4 - year // 100 + year // 400 + (153 * (month - 3) + 2) // 5 + day
    return NAMES[(days + 1) % 7]
""",
        bugs=(
            (" - year // 100 + year // 400", ""),
            ("if month < 3:", "if month < 2:"),
        ),
        checks=(
            ("weekday_name('2020-02-29')", "'Saturday'"),
            ("weekday_name('2021-01-01')", "'Friday'"),
            ("weekday_name('1999-12-31')", "'Friday'"),
        ),
    ),
    "vc042": Reference(
        code="""\
def compress_ranges(nums: list[int]) -> str:
    values = sorted(set(nums))
    parts = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ",".join(parts)
""",
        bugs=(
            ("values = sorted(set(nums))", "values = sorted(nums)"),
            ("if i == j else", "if j - i < 2 else"),
        ),
        checks=(
            ("compress_ranges([2, 3])", "'2-3'"),
            ("compress_ranges([9, 1])", "'1,9'"),
            ("compress_ranges([-1, 0, 1])", "'-1-1'"),
        ),
    ),
    "vc043": Reference(
        code="""\
def valid_ipv4(text: str) -> bool:
    parts = text.split(".")
    if len(parts) != 4:
        return False
    for part in parts:
        if not part or len(part) > 3 or not all("0" <= ch <= "9" for ch in part):
            return False
        if part[0] == "0" and len(part) > 1:
            return False
        if int(part) > 255:
            return False
    return True
""",
        bugs=(
            ('        if part[0] == "0" and len(part) > 1:\n            return False\n', ""),
            ("if int(part) > 255:", "if int(part) >= 255:"),
        ),
        checks=(
            ("valid_ipv4('10.0.0.255')", "True"),
            ("valid_ipv4('10.0.0')", "False"),
            ("valid_ipv4('a.b.c.d')", "False"),
        ),
    ),
    "vc044": Reference(
        code="""\
def max_overlap(intervals: list[tuple[int, int]]) -> int:
    events = []
    for start, end in intervals:
        events.append((start, 1))
        events.append((end, -1))
    events.sort()
    best = current = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best
""",
        bugs=(
            ("events.sort()", "events.sort(key=lambda e: (e[0], -e[1]))"),
            ("events.append((end, -1))", "events.append((end + 1, -1))"),
        ),
        checks=(
            ("max_overlap([(0, 2), (1, 3)])", "2"),
            ("max_overlap([(0, 1), (1, 2)])", "1"),
            ("max_overlap([])", "0"),
        ),
    ),
    "vc045": Reference(
        code="""\
def flatten_dict(data: dict, sep: str = ".") -> dict:
    flat: dict = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{sep}{key}" if prefix else key
            if isinstance(value, dict):
                walk(value, path)
            else:
                flat[path] = value

    walk(data, "")
    return flat
""",
        bugs=(
            (
                'path = f"{prefix}{sep}{key}" if prefix else key',
                'path = f"{prefix}.{key}" if prefix else key',
            ),
            (
                "            if isinstance(value, dict):\n",
                "            if isinstance(value, dict) and value:\n",
            ),
        ),
        checks=(
            ("flatten_dict({'a': {'b': 2}})", "{'a.b': 2}"),
            ("flatten_dict({'a': 1}, '_')", "{'a': 1}"),
            ("flatten_dict({'p': {'q': {}}})", "{}"),
        ),
    ),
    "vc046": Reference(
        code="""\
def to_snake_case(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i > 0:
            prev = name[i - 1]
            nxt = name[i + 1] if i + 1 < len(name) else ""
            if prev.islower() or prev.isdigit() or (prev.isupper() and nxt.islower()):
                out.append("_")
        out.append(ch.lower())
    return "".join(out)
""",
        bugs=(
            ("(prev.isupper() and nxt.islower())", "prev.isupper()"),
            ("prev.islower() or prev.isdigit() or ", "prev.islower() or "),
        ),
        checks=(
            ("to_snake_case('myVar')", "'my_var'"),
            ("to_snake_case('XMLFile')", "'xml_file'"),
            ("to_snake_case('x')", "'x'"),
        ),
    ),
    "vc047": Reference(
        code="""\
def longest_k_distinct(text: str, k: int) -> int:
    if k <= 0:
        return 0
    counts: dict[str, int] = {}
    best = left = 0
    for right, ch in enumerate(text):
        counts[ch] = counts.get(ch, 0) + 1
        while len(counts) > k:
            gone = text[left]
            counts[gone] -= 1
            if counts[gone] == 0:
                del counts[gone]
            left += 1
        best = max(best, right - left + 1)
    return best
""",
        bugs=(
            ("best = max(best, right - left + 1)", "best = max(best, right - left)"),
            ("while len(counts) > k:", "while len(counts) >= k:"),
        ),
        checks=(
            ("longest_k_distinct('aabbcc', 1)", "2"),
            ("longest_k_distinct('aabbcc', 2)", "4"),
            ("longest_k_distinct('xyz', 0)", "0"),
        ),
    ),
    "vc048": Reference(
        code="""\
def eval_expression(expr: str) -> int:
    tokens = []
    i = 0
    while i < len(expr):
        ch = expr[i]
        if ch.isspace():
            i += 1
        elif ch.isdigit():
            j = i
            while j < len(expr) and expr[j].isdigit():
                j += 1
            tokens.append(expr[i:j])
            i = j
        else:
            tokens.append(ch)
            i += 1
    pos = 0

    def peek() -> str:
        return tokens[pos] if pos < len(tokens) else ""

    def take() -> str:
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def expression() -> int:
        value = term()
        while peek() in ("+", "-"):
            if take() == "+":
                value += term()
            else:
                value -= term()
        return value

    def term() -> int:
        value = factor()
        while peek() in ("*", "/"):
            if take() == "*":
                value *= factor()
            else:
                divisor = factor()
                quotient = abs(value) // abs(divisor)
                value = quotient if (value >= 0) == (divisor > 0) else -quotient
        return value

    def factor() -> int:
        token = take()
        if token == "-":
            return -factor()
        if token == "+":
            return factor()
        if token == "(":
            value = expression()
            take()
            return value
        return int(token)

    return expression()
""",
        bugs=(
            ("quotient if (value >= 0) == (divisor > 0) else -quotient", "value // divisor"),
            ("value -= term()", "value -= expression()"),
        ),
        checks=(
            ("eval_expression('2 + 3')", "5"),
            ("eval_expression('(8 - 2) / 4')", "1"),
            ("eval_expression('-3 * -3')", "9"),
        ),
    ),
    "vc049": Reference(
        code="""\
from collections import deque


def shortest_grid_path(grid: list[str]) -> int:
    if not grid or not grid[0]:
        return -1
    rows, cols = len(grid), len(grid[0])
    if grid[0][0] == "#" or grid[rows - 1][cols - 1] == "#":
        return -1
    dist = {(0, 0): 0}
    queue = deque([(0, 0)])
    while queue:
        r, c = queue.popleft()
        if (r, c) == (rows - 1, cols - 1):
            return dist[(r, c)]
        for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            inside = 0 <= nr < rows and 0 <= nc < cols
            if inside and grid[nr][nc] == "." and (nr, nc) not in dist:
                dist[(nr, nc)] = dist[(r, c)] + 1
                queue.append((nr, nc))
    return -1
""",
        bugs=(
            (
                'if grid[0][0] == "#" or grid[rows - 1][cols - 1] == "#":',
                'if grid[rows - 1][cols - 1] == "#":',
            ),
            (
                'if inside and grid[nr][nc] == "." and (nr, nc) not in dist:',
                "if inside and (nr, nc) not in dist:",
            ),
        ),
        checks=(
            ("shortest_grid_path(['...'])", "2"),
            ("shortest_grid_path(['.', '#', '.'])", "-1"),
            ("shortest_grid_path(['..', '#.'])", "2"),
        ),
    ),
    "vc050": Reference(
        code="""\
import heapq


def topo_order(n: int, edges: list[tuple[int, int]]) -> list[int]:
    indegree = [0] * n
    children: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        children[a].append(b)
        indegree[b] += 1
    ready = [v for v in range(n) if indegree[v] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        v = heapq.heappop(ready)
        order.append(v)
        for w in children[v]:
            indegree[w] -= 1
            if indegree[w] == 0:
                heapq.heappush(ready, w)
    return order if len(order) == n else []
""",
        bugs=(
            ("return order if len(order) == n else []", "return order"),
            ("v = heapq.heappop(ready)", "v = ready.pop()"),
        ),
        checks=(
            ("topo_order(2, [(1, 0)])", "[1, 0]"),
            ("topo_order(3, [(2, 1), (1, 0)])", "[2, 1, 0]"),
            ("topo_order(2, [(0, 1), (1, 0)])", "[]"),
        ),
    ),
    "vc051": Reference(
        code="""\
def parse_csv_line(line: str) -> list[str]:
    fields = []
    i = 0
    while True:
        if i < len(line) and line[i] == '"':
            i += 1
            value = []
            while True:
                if line[i] == '"':
                    if i + 1 < len(line) and line[i + 1] == '"':
                        value.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                value.append(line[i])
                i += 1
            fields.append("".join(value))
        else:
            end = line.find(",", i)
            if end == -1:
                end = len(line)
            fields.append(line[i:end])
            i = end
        if i >= len(line):
            return fields
        i += 1
""",
        bugs=(
            ("value.append('\"')\n", "value.append('\"\"')\n"),
            (
                "if i >= len(line):\n            return fields\n        i += 1\n",
                "i += 1\n        if i >= len(line):\n            return fields\n",
            ),
        ),
        checks=(
            ("parse_csv_line('x')", "['x']"),
            ("parse_csv_line('\"a,b\"')", "['a,b']"),
            ("parse_csv_line(',')", "['', '']"),
        ),
    ),
    "vc052": Reference(
        code="""\
import heapq


def cheapest_route(n: int, roads: list[tuple[int, int, int]], start: int, goal: int) -> int:
    links: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for a, b, cost in roads:
        links[a].append((b, cost))
        links[b].append((a, cost))
    best = {start: 0}
    heap = [(0, start)]
    while heap:
        dist, town = heapq.heappop(heap)
        if town == goal:
            return dist
        if dist > best[town]:
            continue
        for nxt, cost in links[town]:
            candidate = dist + cost
            if candidate < best.get(nxt, candidate + 1):
                best[nxt] = candidate
                heapq.heappush(heap, (candidate, nxt))
    return -1
""",
        bugs=(
            ("        links[b].append((a, cost))\n", ""),
            ("if candidate < best.get(nxt, candidate + 1):", "if nxt not in best:"),
        ),
        checks=(
            ("cheapest_route(2, [(0, 1, 7)], 1, 0)", "7"),
            ("cheapest_route(3, [(0, 1, 1)], 0, 2)", "-1"),
            ("cheapest_route(3, [(0, 1, 1), (1, 2, 1), (0, 2, 5)], 0, 2)", "2"),
        ),
    ),
    "vc053": Reference(
        code="""\
def edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            )
        previous = current
    return previous[-1]
""",
        bugs=(
            ("previous[j - 1] + (ca != cb)", "previous[j - 1] + 1"),
            ("current = [i]", "current = [0]"),
        ),
        checks=(
            ("edit_distance('a', 'b')", "1"),
            ("edit_distance('abc', 'abc')", "0"),
            ("edit_distance('abc', 'abcd')", "1"),
        ),
    ),
    "vc054": Reference(
        code="""\
def glob_match(pattern: str, name: str) -> bool:
    # reachable[j]: the pattern read so far can match name[:j]
    reachable = [True] + [False] * len(name)
    for p in pattern:
        if p == "*":
            for j in range(1, len(name) + 1):
                reachable[j] = reachable[j] or reachable[j - 1]
        else:
            for j in range(len(name), 0, -1):
                reachable[j] = reachable[j - 1] and (p == "?" or p == name[j - 1])
            reachable[0] = False
    return reachable[len(name)]
""",
        bugs=(
            ("            reachable[0] = False\n", ""),
            ('(p == "?" or p == name[j - 1])', '(p == "?" or p.lower() == name[j - 1].lower())'),
        ),
        checks=(
            ("glob_match('a?c', 'abc')", "True"),
            ("glob_match('a*', 'b')", "False"),
            ("glob_match('**', 'xyz')", "True"),
        ),
    ),
    "vc055": Reference(
        code="""\
def expand_braces(pattern: str) -> list[str]:
    def sequence(i: int, stop: str) -> tuple[set[str], int]:
        # A concatenation, up to one of the characters in `stop` or the end.
        results = {""}
        while i < len(pattern) and pattern[i] not in stop:
            if pattern[i] == "{":
                options, i = group(i + 1)
                results = {r + o for r in results for o in options}
            else:
                results = {r + pattern[i] for r in results}
                i += 1
        return results, i

    def group(i: int) -> tuple[set[str], int]:
        # The alternatives after a "{", up to its matching "}".
        options: set[str] = set()
        while True:
            part, i = sequence(i, ",}")
            options |= part
            if pattern[i] == "}":
                return options, i + 1
            i += 1

    expansions, _ = sequence(0, "")
    return sorted(expansions)
""",
        bugs=(
            ("options |= part", "options = part"),
            ("return options, i + 1", "return options, i"),
        ),
        checks=(
            ("expand_braces('{p,q}')", "['p', 'q']"),
            ("expand_braces('a{,b}')", "['a', 'ab']"),
            ("expand_braces('z')", "['z']"),
        ),
    ),
    "vc056": Reference(
        code="""\
def league_table(results: list[str]) -> list[str]:
    table: dict[str, list[int]] = {}
    for line in results:
        home, score, away = line.split()
        home_goals, away_goals = (int(x) for x in score.split("-"))
        sides = ((home, home_goals, away_goals), (away, away_goals, home_goals))
        for team, scored, conceded in sides:
            row = table.setdefault(team, [0, 0, 0])
            row[0] += 3 if scored > conceded else 1 if scored == conceded else 0
            row[1] += scored - conceded
            row[2] += scored
    ranked = sorted(table.items(), key=lambda kv: (-kv[1][0], -kv[1][1], -kv[1][2], kv[0]))
    lines = []
    for team, (points, diff, scored) in ranked:
        sign = f"{diff:+d}" if diff else "0"
        lines.append(f"{team} {points} {sign} {scored}")
    return lines
""",
        bugs=(
            (
                "row[0] += 3 if scored > conceded else 1 if scored == conceded else 0",
                "row[0] += 3 if scored > conceded else 1",
            ),
            ('sign = f"{diff:+d}" if diff else "0"', "sign = str(diff)"),
        ),
        checks=(
            ("league_table(['P 1-0 Q'])", "['P 3 +1 1', 'Q 0 -1 0']"),
            ("league_table(['P 2-2 Q'])", "['P 1 0 2', 'Q 1 0 2']"),
            ("league_table([])", "[]"),
        ),
    ),
    "vc057": Reference(
        code="""\
from fractions import Fraction


def determinant(matrix: list[list[int]]) -> int:
    m = [[Fraction(x) for x in row] for row in matrix]
    n = len(m)
    det = Fraction(1)
    for col in range(n):
        pivot = next((r for r in range(col, n) if m[r][col] != 0), None)
        if pivot is None:
            return 0
        if pivot != col:
            m[col], m[pivot] = m[pivot], m[col]
            det = -det
        det *= m[col][col]
        for r in range(col + 1, n):
            factor = m[r][col] / m[col][col]
            for c in range(col, n):
                m[r][c] -= factor * m[col][c]
    return int(det)
""",
        bugs=(
            ("            det = -det\n", ""),
            ("factor = m[r][col] / m[col][col]", "factor = m[r][col] // m[col][col]"),
        ),
        checks=(
            ("determinant([[3, 0], [0, 3]])", "9"),
            ("determinant([[1, 1], [1, 1]])", "0"),
            ("determinant([[4]])", "4"),
        ),
    ),
    "vc058": Reference(
        code="""\
from datetime import date


def business_days(start: str, end: str) -> int:
    a, b = date.fromisoformat(start), date.fromisoformat(end)
    if b < a:
        return -business_days(end, start)
    weeks, extra = divmod((b - a).days, 7)
    count = weeks * 5
    first = a.weekday()
    for k in range(extra):
        if (first + k) % 7 < 5:
            count += 1
    return count
""",
        bugs=(
            ("return -business_days(end, start)", "return 0"),
            ("if (first + k) % 7 < 5:", "if (first + k) % 7 <= 5:"),
        ),
        checks=(
            ("business_days('2024-01-01', '2024-01-02')", "1"),
            ("business_days('2024-01-07', '2024-01-08')", "0"),
            ("business_days('2024-01-01', '2024-01-15')", "10"),
        ),
    ),
}


# --- deciding the outcome ----------------------------------------------------------------------
def _unit(*parts: object) -> float:
    """A uniform number in [0, 1) fixed by `parts` (the same on every run and machine)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _choice(count: int, *parts: object) -> int:
    return int(_unit("variant", *parts) * count)


def outcome(problem_id: str, seed: int, repair: bool = False) -> str:
    """The kind of reply for this problem and seed: one of `OUTCOMES`.

    A repair is "correct" with probability `REPAIR_SUCCESS`, else the first attempt's kind
    again (a first attempt that was correct stays correct).
    """
    u, acc, first = _unit("first", problem_id, seed), 0.0, OUTCOMES[-1]
    for kind, rate in RATES.items():
        acc += rate
        if u < acc:
            first = kind
            break
    if not repair or first == "correct":
        return first
    return "correct" if _unit("repair", problem_id, seed) < REPAIR_SUCCESS else first


def hostile_kind(problem_id: str, seed: int, repair: bool = False) -> str:
    """Which attack a hostile reply carries: consecutive problems (and seeds) take turns."""
    digits = re.sub(r"\D", "", problem_id)
    n = int(digits) if digits else int(_unit("kind", problem_id) * 1000)
    return HOSTILE_KINDS[(n + seed + int(repair)) % len(HOSTILE_KINDS)]


# --- the replies' code -------------------------------------------------------------------------
def wrong_solution(problem_id: str, variant: int) -> str:
    """The reference with bug number `variant` (modulo the number of bugs) applied."""
    ref = REFERENCES[problem_id]
    old, new = ref.bugs[variant % len(ref.bugs)]
    return ref.code.replace(old, new, 1)


def syntax_error(problem_id: str, variant: int) -> str:
    """The reference with a slip that stops it compiling: a lost colon or an open bracket."""
    lines = REFERENCES[problem_id].code.splitlines(keepends=True)
    if variant % SYNTAX_VARIANTS == 0:
        i = _signature_line(problem_id)
        lines[i] = lines[i].rstrip().removesuffix(":") + "\n"
    else:
        i = max(k for k, line in enumerate(lines) if line.lstrip().startswith("return "))
        lines[i] = lines[i].replace("return ", "return (", 1)
    return "".join(lines)


def _signature_line(problem_id: str) -> int:
    entry = REFERENCES[problem_id].entry_point
    lines = REFERENCES[problem_id].code.splitlines()
    return next(i for i, line in enumerate(lines) if line.startswith(f"def {entry}("))


# Each payload defines `_setup()`; `hostile_solution` calls it at import or at call time.
# They raise when the attack is blocked, so a contained attack fails the run.
PAYLOADS: dict[str, str] = {
    "fork_bomb": """\
def _setup():
    import os

    while True:
        os.fork()
""",
    "memory": """\
def _setup():
    hoard = []
    while True:
        hoard.append(" " * 10**6)
""",
    "infinite_loop": """\
def _setup():
    spins = 0
    while True:
        spins += 1
""",
    "print_flood": """\
def _setup():
    import sys

    block = "x" * (1 << 20)
    while True:
        sys.stdout.write(block)
""",
    "network": """\
def _setup():
    import socket

    failures = []
    for host, port in (("1.1.1.1", 53), ("127.0.0.1", 22)):
        try:
            with socket.create_connection((host, port), timeout=3):
                print(f"connected to {host}:{port}")
        except OSError as exc:
            failures.append(f"{host}:{port}: {exc}")
    if failures:
        raise ConnectionError("; ".join(failures))
""",
    "read_secrets": """\
def _setup():
    import os

    print(dict(os.environ))
    failures = []
    for path in ("/etc/shadow", os.path.expanduser("~/.ssh/id_rsa")):
        try:
            with open(path) as handle:
                print(path, handle.read())
        except OSError as exc:
            failures.append(f"{path}: {exc}")
    if failures:
        raise PermissionError("; ".join(failures))
""",
    "write_outside": """\
def _setup():
    failures = []
    for path in ("/tmp/pwned_{tag}", "../escape_{tag}"):
        try:
            with open(path, "w") as handle:
                handle.write("written from inside the sandbox\\n")
        except OSError as exc:
            failures.append(f"{path}: {exc}")
    if failures:
        raise PermissionError("; ".join(failures))
""",
    "background_process": """\
def _setup():
    import subprocess

    child = subprocess.Popen(["sleep", "600"], start_new_session=True)
    print(f"left a background process behind: pid {child.pid}")
""",
    "ptrace": """\
def _setup():
    import ctypes
    import ctypes.util
    import os

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    PTRACE_ATTACH = 16
    if libc.ptrace(PTRACE_ATTACH, 1, None, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"ptrace(PTRACE_ATTACH, 1): {os.strerror(err)}")
    print("attached to pid 1")
""",
    "setrlimit": """\
def _setup():
    import resource

    failures = []
    for name in ("RLIMIT_NPROC", "RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NOFILE"):
        limit = getattr(resource, name)
        try:
            resource.setrlimit(limit, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            print(f"{name} raised to unlimited")
        except (ValueError, OSError) as exc:
            failures.append(f"{name}: {exc}")
    if failures:
        raise PermissionError("; ".join(failures))
""",
}


def hostile_solution(problem_id: str, kind: str, at_import: bool) -> str:
    """The right function plus payload `kind`, run when the module is imported or called."""
    payload = PAYLOADS[kind].replace("{tag}", problem_id)
    code = REFERENCES[problem_id].code
    if at_import:
        return f"{code}\n\n{payload}\n\n_setup()\n"
    lines = code.splitlines(keepends=True)
    i = _signature_line(problem_id)
    lines.insert(i + 1, "    _setup()\n")
    return f"{payload}\n\n{''.join(lines)}"


def model_tests(problem_id: str, wrong: bool = False) -> str:
    """The model's own test module; `wrong` copies the second test's expected value into the
    first (a copy-paste slip), so that test fails against a correct solution."""
    ref = REFERENCES[problem_id]
    entry = ref.entry_point
    checks = list(ref.checks)
    if wrong:
        checks[0] = (checks[0][0], checks[1][1])
    out = [f"from solution import {entry}\n"]
    for n, (call, expected) in enumerate(checks, 1):
        op = "is" if expected in ("None", "True", "False") else "=="
        out.append(f"\ndef test_{entry}_{n}():\n    assert {call} {op} {expected}\n")
    return "\n".join(out)


def _fenced(solution: str, tests: str) -> str:
    return f"```python\n{solution.rstrip()}\n```\n\nTests:\n\n```python\n{tests.rstrip()}\n```\n"


def compose(problem_id: str, kind: str, seed: int = 0, repair: bool = False) -> str:
    """The reply text for an outcome `kind` (variants chosen from the seed)."""
    ref = REFERENCES[problem_id]
    opening = (
        "Thanks, the sandbox output shows what went wrong. Here is a corrected version.\n\n"
        if repair
        else "Here is a solution, followed by unit tests.\n\n"
    )
    variant = _choice(1 << 16, problem_id, seed) + int(repair)
    tests = model_tests(problem_id, wrong=kind == "wrong_test")
    if kind in ("correct", "wrong_test"):
        solution = ref.code
    elif kind == "wrong_solution":
        solution = wrong_solution(problem_id, variant)
    elif kind == "syntax_error":
        solution = syntax_error(problem_id, variant)
    elif kind == "hostile":
        attack = hostile_kind(problem_id, seed, repair)
        solution = hostile_solution(problem_id, attack, at_import=variant % 2 == 0)
    elif kind == "no_code":
        if variant % NO_CODE_VARIANTS == 0:
            return (
                f"To solve this I would write `{ref.entry_point}` so that it handles the edge "
                "cases from the statement first (empty input, ties, negative values) and then "
                "walks through the input once, keeping only the state it needs. Let me know if "
                "you want the full code."
            )
        return f"Here is the function:\n\n{ref.code}\nIt covers the edge cases in the statement."
    else:
        raise ValueError(f"unknown outcome {kind!r}")
    return opening + _fenced(solution, tests)


# --- reading the request -----------------------------------------------------------------------
def _text(content: Any) -> str:
    """A message's text, whether a string or a list of OpenAI content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text") or "") for part in content if isinstance(part, dict))
    return ""


def parse_request(request: dict[str, Any]) -> tuple[str | None, str | None, bool, int]:
    """(problem id, entry point named in the prompt, is it a repair, seed) of a request."""
    users = [
        _text(m.get("content")) for m in request.get("messages") or [] if m.get("role") == "user"
    ]
    problem_id = entry = None
    for text in reversed(users):
        match = PROBLEM_MARKER.search(text)
        if match:
            problem_id = match.group(1)
            signature = _SIGNATURE.search(text[match.end() :])
            entry = signature.group(1) if signature else None
            break
    repair = any(REPAIR_MARKER in text for text in users)
    try:
        seed = int(request.get("seed") or 0)
    except (TypeError, ValueError):
        seed = 0
    return problem_id, entry, repair, seed


def reply(request: dict[str, Any]) -> str:
    """The simulated coder's answer to one chat-completions request."""
    problem_id, entry, repair, seed = parse_request(request)
    if problem_id is None:
        return "I need a problem statement (a line `Problem <id>: <title>`) to write code for."
    if problem_id not in REFERENCES:
        name = entry or "solve"
        stub = f"def {name}(*args, **kwargs):\n    raise NotImplementedError\n"
        tests = (
            f"from solution import {name}\n\n\ndef test_{name}():\n    assert {name}() is None\n"
        )
        return "I could not solve this one; here is a stub.\n\n" + _fenced(stub, tests)
    return compose(problem_id, outcome(problem_id, seed, repair), seed, repair)
