"""The report's plots, as inline SVG written here.

Why not matplotlib: it would be a core dependency of every install (the report is written
at the end of every run), and with its dependencies (Pillow, fontTools, kiwisolver, ...)
that is about 80 MB and 0.75 s of import time at the end of each run, for three kinds of
plot: lines over time, histograms on a log axis and nothing else. SVG is vector (sharp at
any zoom, printable), a few kilobytes per plot, needs no image decoding in the page, and
each bar and line carries a `<title>` the browser shows on hover.

Every function returns one `<svg>` element as text; values are escaped, sizes are in the
viewBox so the page can scale the plot to its column.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

PALETTE = (
    "#3366cc",
    "#dc3912",
    "#109618",
    "#ff9900",
    "#990099",
    "#0099c6",
    "#dd4477",
    "#66aa00",
    "#b82e2e",
    "#316395",
)

# Lines of a status are always drawn in the status's colour.
STATUS_COLORS = {"all": "#3366cc", "ok": "#1a7f37", "error": "#c62828", "rejected": "#d08700"}

_W, _H = 640, 230
_LEFT, _RIGHT, _TOP, _BOTTOM = 58, 12, 26, 34


def fmt_number(v: float) -> str:
    """A short label: 1.2k, 3.4M, 0.25."""
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:.3g}G"
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 100 or v == int(v):
        return f"{v:.0f}"
    return f"{v:.3g}"


def fmt_seconds(v: float) -> str:
    """A duration label: 12 µs, 3.4 ms, 1.2 s, 5.0 min, 2.1 h."""
    if v <= 0:
        return "0"
    if v < 1e-3:
        return f"{v * 1e6:.3g} µs"
    if v < 1:
        return f"{v * 1e3:.3g} ms"
    if v < 120:
        return f"{v:.3g} s"
    if v < 7200:
        return f"{v / 60:.3g} min"
    return f"{v / 3600:.3g} h"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten)."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0]
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    start = math.floor(lo / step) * step
    ticks = [round(start, 12)]
    while ticks[-1] < hi - step * 1e-9:  # the last tick is at or above `hi`
        ticks.append(round(start + len(ticks) * step, 12))
    return ticks


def _frame(title: str, body: list[str], *, width: int = _W, height: int = _H) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg" aria-label="{escape(title)}">'
        f'<text class="ctitle" x="{_LEFT}" y="16">{escape(title)}</text>' + "".join(body) + "</svg>"
    )


def empty(title: str, note: str) -> str:
    return _frame(
        title,
        [f'<text class="cnote" x="{_W / 2}" y="52" text-anchor="middle">{escape(note)}</text>'],
        height=80,
    )


def line_chart(
    x: Sequence[float],
    series: Sequence[tuple[str, Sequence[float]] | tuple[str, Sequence[float], str]],
    *,
    title: str,
    x_label: str = "seconds since the run started",
    y_format: str = "number",
) -> str:
    """Lines over a shared x axis (time), one per (label, values[, color]), with a legend."""
    points = [v for line in series for v in line[1] if math.isfinite(v)]
    if len(x) < 2 or not points:
        return empty(title, "not enough samples to draw")
    x0, x1 = min(x), max(x)
    if x1 <= x0:
        x1 = x0 + 1
    ymax = max(points) or 1.0
    yt = nice_ticks(0.0, ymax)
    ytop = yt[-1] or 1.0
    pw, ph = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def px(v: float) -> float:
        return _LEFT + (v - x0) / (x1 - x0) * pw

    def py(v: float) -> float:
        return _TOP + ph - v / ytop * ph

    fmt = fmt_seconds if y_format == "seconds" else fmt_number
    body = _axes(nice_ticks(x0, x1, 6), yt, px, py, x0, x1, fmt, fmt_number, x_label)
    colors = [
        line[2] if len(line) > 2 else PALETTE[i % len(PALETTE)] for i, line in enumerate(series)
    ]
    for i, (label, values, *_) in enumerate(series):
        color = colors[i]
        coords = " ".join(
            f"{px(a):.1f},{py(b):.1f}" for a, b in zip(x, values, strict=False) if math.isfinite(b)
        )
        peak = max((v for v in values if math.isfinite(v)), default=0.0)
        mean = sum(values) / len(values) if values else 0.0
        body.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{coords}">'
            f"<title>{escape(label)}: mean {fmt(mean)}, peak {fmt(peak)}</title></polyline>"
        )
    body.append(_legend([line[0] for line in series], colors))
    return _frame(title, body)


def _axes(
    xt: list[float],
    yt: list[float],
    px: Callable[[float], float],
    py: Callable[[float], float],
    x0: float,
    x1: float,
    y_fmt: Callable[[float], str],
    x_fmt: Callable[[float], str],
    x_label: str,
) -> list[str]:
    """Grid lines, tick labels and the x axis label (ticks outside [x0, x1] are dropped)."""
    out: list[str] = []
    left, right = _LEFT, _W - _RIGHT
    bottom = _H - _BOTTOM
    for v in yt:
        y = py(v)
        out.append(f'<line class="grid" x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(
            f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(y_fmt(v))}</text>"
        )
    for v in xt:
        if v < x0 - 1e-9 or v > x1 + 1e-9:
            continue
        x = px(v)
        out.append(
            f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}"/>'
        )
        out.append(
            f'<text class="tick" x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">'
            f"{escape(x_fmt(v))}</text>"
        )
    out.append(f'<line class="axis" x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}"/>')
    out.append(
        f'<text class="tick" x="{(left + right) / 2}" y="{_H - 4}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
    )
    return out


def _legend(labels: Sequence[str], colors: Sequence[str]) -> str:
    parts, x = [], _W - _RIGHT
    for i in range(len(labels) - 1, -1, -1):
        label = labels[i]
        x -= 18 + 6.5 * len(label)
        color = colors[i]
        parts.append(
            f'<rect x="{x:.0f}" y="8" width="10" height="10" fill="{color}"/>'
            f'<text class="legend" x="{x + 14:.0f}" y="17">{escape(label)}</text>'
        )
    return "".join(parts)


def log_histogram(
    buckets: dict[int, int],
    *,
    title: str,
    per_doubling: int = 8,
    merge: int = 2,
    unit: str = "steps",
    color: str = PALETTE[0],
) -> str:
    """A histogram of durations on a log axis, from `peerflow.stats.Histogram` buckets.

    Bucket `b` holds values in [2^(b/per_doubling), 2^((b+1)/per_doubling)); `merge`
    adjacent buckets make one bar, so 8 per doubling drawn with merge 2 is 4 bars per
    doubling (each about 19% wide).
    """
    if not buckets or not sum(buckets.values()):
        return empty(title, f"no {unit}")
    bars: dict[int, int] = {}
    for b, n in buckets.items():
        bars[int(b) // merge] = bars.get(int(b) // merge, 0) + int(n)
    lo, hi = min(bars), max(bars) + 1
    if hi - lo < 8:  # a narrow spread: give it room on both sides
        pad = (8 - (hi - lo)) // 2 + 1
        lo, hi = lo - pad, hi + pad
    step = merge / per_doubling  # log2 width of a bar

    def edge(k: float) -> float:
        return 2 ** (k * step)

    pw, ph = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    top = max(bars.values())
    yt = nice_ticks(0, top, 4)
    ytop = yt[-1] or 1

    def px(k: float) -> float:
        return _LEFT + (k - lo) / (hi - lo) * pw

    def py(v: float) -> float:
        return _TOP + ph - v / ytop * ph

    body: list[str] = []
    for v in yt:
        y = py(v)
        body.append(
            f'<line class="grid" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        body.append(
            f'<text class="tick" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(fmt_number(v))}</text>"
        )
    total = sum(bars.values())
    for k, n in sorted(bars.items()):
        x, w = px(k), pw / (hi - lo)
        y = py(n)
        tip = (
            f"{fmt_seconds(edge(k))} to {fmt_seconds(edge(k + 1))}: {n:,} {unit} ({n / total:.1%})"
        )
        body.append(
            f'<rect x="{x + 0.5:.1f}" y="{y:.1f}" width="{max(w - 1, 0.8):.1f}" '
            f'height="{_TOP + ph - y:.1f}" fill="{color}"><title>{escape(tip)}</title></rect>'
        )
    bottom = _H - _BOTTOM
    # Ticks at powers of ten within the range (1 µs ... 1 h), else at every other bar.
    decades = [d for d in range(-6, 5) if lo <= math.log2(10.0**d) / step <= hi]
    ticks = [math.log2(10.0**d) / step for d in decades] or [
        float(k) for k in range(lo, hi + 1, max((hi - lo) // 5, 1))
    ]
    for k in ticks:
        x = px(k)
        body.append(
            f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}"/>'
        )
        body.append(
            f'<text class="tick" x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">'
            f"{escape(fmt_seconds(edge(k)))}</text>"
        )
    body.append(f'<line class="axis" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{bottom}" y2="{bottom}"/>')
    body.append(
        f'<text class="tick" x="{(_LEFT + _W - _RIGHT) / 2}" y="{_H - 4}" '
        f'text-anchor="middle">duration (log scale)</text>'
    )
    return _frame(title, body)


def histogram(
    counts: Sequence[int],
    edges: Sequence[float],
    *,
    title: str,
    x_label: str,
    unit: str = "items",
    color: str = PALETTE[2],
) -> str:
    """Bars of `counts` between consecutive `edges` on a linear axis (a distribution of
    values such as item difficulty)."""
    total = sum(counts)
    if not total or len(edges) != len(counts) + 1:
        return empty(title, f"no {unit}")
    x0, x1 = float(edges[0]), float(edges[-1])
    if x1 <= x0:
        x1 = x0 + 1.0
    pw, ph = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    yt = nice_ticks(0, max(counts), 4)
    ytop = yt[-1] or 1

    def px(v: float) -> float:
        return _LEFT + (v - x0) / (x1 - x0) * pw

    def py(v: float) -> float:
        return _TOP + ph - v / ytop * ph

    body = _axes(nice_ticks(x0, x1, 6), yt, px, py, x0, x1, fmt_number, fmt_number, x_label)
    for n, lo, hi in zip(counts, edges[:-1], edges[1:], strict=True):
        if not n:
            continue
        x, w, y = px(lo), px(hi) - px(lo), py(n)
        tip = f"{lo:.2f} to {hi:.2f}: {n:,} {unit} ({n / total:.1%})"
        body.append(
            f'<rect x="{x + 0.5:.1f}" y="{y:.1f}" width="{max(w - 1, 0.8):.1f}" '
            f'height="{_TOP + ph - y:.1f}" fill="{color}"><title>{escape(tip)}</title></rect>'
        )
    return _frame(title, body)


def rates(t: Sequence[float], cumulative: Sequence[float]) -> tuple[list[float], list[float]]:
    """Per-second rates between consecutive samples of a cumulative counter, placed at the
    middle of each interval (the counters only grow; a drop, as when a Ray sink restarts
    and its counts are re-read, is drawn as 0)."""
    xs, ys = [], []
    for i in range(1, min(len(t), len(cumulative))):
        dt = t[i] - t[i - 1]
        if dt <= 0:
            continue
        xs.append((t[i] + t[i - 1]) / 2)
        ys.append(max(cumulative[i] - cumulative[i - 1], 0) / dt)
    return xs, ys
