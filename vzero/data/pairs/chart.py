"""Procedural chart pairs: a random data table plotted twice, the second time with two values swapped.

Pair ``i`` is a pure function of ``(seed, i)``: the table, the chart kind, the styling and the swap all come from
``numpy.random.default_rng([seed, i])``, and Agg rendering at a fixed dpi gives identical pixels for identical input.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from vzero.data.pairs.base import HELD_OUT_SEED, ImagePair, PairSource, is_int

KINDS = ("bar", "line", "pie")
_DPI = 100
_MIN_SIDE, _MAX_SIDE = 96, 4096

# (dimension, labels, ordered): ordered dimensions take a contiguous run so the axis reads naturally.
_CATEGORIES: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("month", ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), True),
    ("quarter", ("Q1", "Q2", "Q3", "Q4"), True),
    ("year", tuple(str(y) for y in range(2014, 2025)), True),
    ("weekday", ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"), True),
    ("region", ("North", "South", "East", "West", "Central", "Coastal", "Highlands"), False),
    ("product", ("Widgets", "Gadgets", "Gizmos", "Sprockets", "Lamps", "Kettles", "Chairs"), False),
    ("city", ("Oslo", "Lima", "Cairo", "Perth", "Osaka", "Quito", "Dakar", "Porto"), False),
    ("channel", ("Online", "Retail", "Wholesale", "Partners", "Direct"), False),
)
_TIME_DIMENSIONS = {"month", "quarter", "year", "weekday"}

# (metric, unit, low, high, decimals, additive): the range a typical category value falls in; "Total rating" reads
# wrong, so non-additive metrics are only ever averaged.
_METRICS: tuple[tuple[str, str, float, float, int, bool], ...] = (
    ("revenue", "k$", 40, 900, 0, True),
    ("sales", "units", 100, 5000, 0, True),
    ("visitors", "thousands", 2, 60, 1, True),
    ("rainfall", "mm", 10, 250, 0, True),
    ("downloads", "k", 5, 400, 0, True),
    ("orders", "count", 20, 800, 0, True),
    ("expenses", "k$", 10, 300, 0, True),
    ("energy use", "MWh", 1, 40, 1, True),
    ("support tickets", "count", 10, 500, 0, True),
    ("customer rating", "stars", 1.5, 5, 1, False),
    ("temperature", "°C", 4, 32, 1, False),
)
_TIME_QUALIFIERS = ("Total", "Average", "")
_OTHER_QUALIFIERS = ("Monthly", "Quarterly", "Annual", "Weekly", "Total", "Average")

_SERIES = (
    ("2022", "2023", "2024"),
    ("Plan", "Actual", "Forecast"),
    ("Store A", "Store B", "Store C"),
    ("Online", "In-store", "Phone"),
    ("Team Red", "Team Blue", "Team Green"),
    ("Model X", "Model Y", "Model Z"),
)

_PALETTES = (
    ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"),
    ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948"),
    ("#66c2a5", "#fc8d62", "#8da0cb", "#e78ac3", "#a6d854", "#ffd92f"),
    ("#003f5c", "#7a5195", "#ef5675", "#ffa600", "#58508d", "#bc5090"),
)


class ChartPairs(PairSource):
    """Bar, line and pie charts of random tables; the spy's chart has two values of one series swapped.

    Args:
        n: Number of pairs.
        seed: Base seed; pair ``i`` depends only on ``(seed, i)``.
        size: Rendered ``(width, height)`` in pixels.
        kinds: Chart kinds to draw from (uniformly per pair; repeat a kind to weight it).
    """

    def __init__(
        self,
        n: int = 1000,
        seed: int = 0,
        size: tuple[int, int] = (480, 320),
        kinds: Sequence[str] = KINDS,
    ) -> None:
        if not is_int(n) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        if not is_int(seed) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if (
            not isinstance(size, Sequence)
            or len(size) != 2
            or not all(is_int(s) and _MIN_SIDE <= s <= _MAX_SIDE for s in size)
        ):
            raise ValueError(f"size must be (width, height) ints in [{_MIN_SIDE}, {_MAX_SIDE}], got {size!r}")
        if isinstance(kinds, str) or not isinstance(kinds, Sequence) or not kinds:
            raise ValueError(f"kinds must be a non-empty sequence of chart kinds from {KINDS}, got {kinds!r}")
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"kinds has unknown chart kinds {unknown}; choose from {KINDS}")
        self.n, self.seed, self.size, self.kinds = int(n), int(seed), (int(size[0]), int(size[1])), tuple(kinds)

    def __len__(self) -> int:
        return self.n

    def held_out(self, n: int) -> ChartPairs:
        return ChartPairs(n, self.seed + HELD_OUT_SEED, self.size, self.kinds)

    def _get(self, index: int) -> ImagePair:
        rng = np.random.default_rng([self.seed, index])
        kind = str(rng.choice(self.kinds))
        table, decimals, ylabel, xlabel = _random_table(rng, kind)
        swap_series, a, b = _choose_swap(rng, table)
        modified = copy.deepcopy(table)
        values = modified["series"][swap_series]
        values[a], values[b] = values[b], values[a]
        style = _Style(
            palette=_PALETTES[int(rng.integers(len(_PALETTES)))],
            grid=bool(rng.random() < 0.6),
            value_labels=bool(rng.random() < 0.75),
            percent=bool(rng.random() < 0.6),
            decimals=decimals,
            xlabel=xlabel,
            ylabel=ylabel,
        )
        meta = {
            "index": index,
            "seed": self.seed,
            "chart": kind,
            "table": table,
            "modified_table": modified,
            "swap": {"series": swap_series, "categories": [table["categories"][a], table["categories"][b]]},
        }
        original, spy = _render_pair(table, modified, kind, self.size, style)
        return ImagePair(original=original, modified=spy, domain="chart", meta=meta)


@dataclass(frozen=True)
class _Style:
    """Everything about a chart's look that both pictures of a pair share."""

    palette: Sequence[str]
    grid: bool
    value_labels: bool
    percent: bool
    decimals: int
    xlabel: str
    ylabel: str

    def fmt(self, value: float) -> str:
        return f"{value:.{self.decimals}f}"


def _random_table(rng: np.random.Generator, kind: str) -> tuple[dict[str, Any], int, str, str]:
    """A titled table plus the value precision and axis labels that go with it."""
    # Lines imply an order along the axis, so they only plot time-like categories.
    dimensions = [c for c in _CATEGORIES if c[2] or kind != "line"]
    dimension, labels, ordered = dimensions[int(rng.integers(len(dimensions)))]
    k = int(rng.integers(3, min(6, len(labels)) + 1))
    if ordered:
        start = int(rng.integers(len(labels) - k + 1))
        categories = list(labels[start : start + k])
    else:
        categories = [labels[j] for j in rng.choice(len(labels), size=k, replace=False)]

    # A pie of shares only makes sense for quantities that add up.
    metrics = [m for m in _METRICS if m[5] or kind != "pie"]
    metric, unit, low, high, decimals, additive = metrics[int(rng.integers(len(metrics)))]
    if not additive:
        qualifiers: tuple[str, ...] = ("Average",)
    elif dimension in _TIME_DIMENSIONS:
        qualifiers = _TIME_QUALIFIERS
    else:
        qualifiers = _OTHER_QUALIFIERS
    if kind == "pie":
        qualifiers = tuple(q for q in qualifiers if q != "Average")
    qualifier = qualifiers[int(rng.integers(len(qualifiers)))]
    title = f"{qualifier} {metric} by {dimension}".strip()
    if kind == "pie":
        title = f"Share of {title[0].lower()}{title[1:]}"
    title = title[0].upper() + title[1:]

    if kind == "pie":
        names = [metric[0].upper() + metric[1:]]
    else:
        # Series must not repeat the category dimension (years by year, online by channel).
        options = [s for s in _SERIES if not set(s) & set(labels)]
        group = options[int(rng.integers(len(options)))]
        count = int(rng.integers(1, 4))
        names = list(group[:count]) if count > 1 else [metric[0].upper() + metric[1:]]

    # Series share one level so none shrinks to a sliver next to the others (where a swap would be invisible).
    level = rng.uniform(low, high)
    series: dict[str, list[float | int]] = {}
    for name in names:
        scale = level * rng.uniform(0.6, 1.4)
        if kind == "line":
            # A random walk looks like a real time series rather than noise.
            steps = rng.uniform(0.75, 1.3, size=k)
            raw = scale * rng.uniform(0.5, 1.0) * np.cumprod(steps) / steps[0]
        else:
            raw = scale * rng.uniform(0.3, 1.0, size=k)
        if not additive:
            raw = np.minimum(raw, high)  # ratings and temperatures have a plausible ceiling
        series[name] = [_round(v, decimals) for v in raw]
    table = {"title": title, "categories": categories, "series": series}
    return table, decimals, f"{metric[0].upper()}{metric[1:]} ({unit})", dimension[0].upper() + dimension[1:]


def _round(value: float, decimals: int) -> float | int:
    floor = 10.0**-decimals
    value = max(float(value), floor)
    return int(round(value)) if decimals == 0 else round(value, decimals)


def _choose_swap(rng: np.random.Generator, table: dict[str, Any]) -> tuple[str, int, int]:
    """A series and two category indices whose values differ by at least 12% of the table's peak, so it shows."""
    series = table["series"]
    peak = max(max(v) for v in series.values())
    candidates = {
        name: [(a, b) for a, b in itertools.combinations(range(len(v)), 2) if abs(v[a] - v[b]) >= 0.12 * peak]
        for name, v in series.items()
    }
    names = [name for name, pairs in candidates.items() if pairs]
    if not names:
        # Near-flat table (rare): make one value stand out so the swap is still visible.
        name = next(iter(series))
        values = series[name]
        values[1] = _round(values[0] * 1.5 + 1, 0 if isinstance(values[0], int) else 1)
        return name, 0, 1
    name = names[int(rng.integers(len(names)))]
    a, b = candidates[name][int(rng.integers(len(candidates[name])))]
    return name, a, b


def _render_pair(
    table: dict[str, Any], modified: dict[str, Any], kind: str, size: tuple[int, int], style: _Style
) -> tuple[Image.Image, Image.Image]:
    """Plot both tables on one Agg figure (no pyplot: no global state, nothing leaks) and return their RGB pixels.

    The frame (title, axes, ticks, legend) is built once from the original; only the data artists are replaced for the
    modified table, which guarantees everything else is identical and roughly halves the cost of the second picture.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = size
    fig = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    # Font sizes follow the picture so small and large renders look alike; fixed margins avoid tight_layout's cost.
    font = max(5.0, min(width, height) / 40 * 72 / _DPI * 1.4)
    categories, series = table["categories"], table["series"]
    fig.suptitle(table["title"], fontsize=font * 1.2, y=1 - 6 / height, va="top")
    top = 1 - (font * 1.2 * _DPI / 72 + 14) / height

    if kind == "pie":
        ax = fig.add_axes((0.05, 0.03, 0.9, top - 0.05))
    else:
        left = (font * _DPI / 72 * 5.5) / width
        bottom = (font * _DPI / 72 * 3.2) / height
        ax = fig.add_axes((left, bottom, 0.97 - left, top - bottom))
        x = np.arange(len(categories))
        n = len(series)
        # Fixed limits from the table's peak leave headroom for value labels and the legend; a swap keeps the peak.
        peak = max(max(v) for v in series.values())
        ax.set_xlim(-0.5 if kind == "bar" else -0.4, len(categories) - (0.5 if kind == "bar" else 0.6))
        ax.set_ylim(0, peak * (1.35 if n > 1 else 1.18))
        ax.set_xticks(x, categories, fontsize=font * 0.85)
        ax.tick_params(axis="y", labelsize=font * 0.85)
        ax.set_xlabel(style.xlabel, fontsize=font * 0.85)
        ax.set_ylabel(style.ylabel, fontsize=font * 0.85)
        ax.spines[["top", "right"]].set_visible(False)
        if style.grid:
            ax.yaxis.grid(True, color="#dddddd", linewidth=0.8, zorder=0)

    images = []
    for data in (table, modified):
        artists = _plot_data(ax, kind, data, style, font)
        if kind != "pie" and len(series) > 1 and ax.get_legend() is None:
            ax.legend(
                loc="upper left",
                ncol=len(series),
                fontsize=font * 0.85,
                frameon=False,
                handlelength=1.2,
                columnspacing=1.0,
            )
        canvas.draw()
        image = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())
        if image.size != (width, height):
            # Float inches * dpi could land a pixel short; a deterministic resize keeps the promised size.
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        images.append(image)
        for artist in artists:
            artist.remove()
    return images[0], images[1]


def _plot_data(ax: Any, kind: str, table: dict[str, Any], style: _Style, font: float) -> list[Any]:
    """Draw a table's data (bars, lines or wedges and their value labels); returns the artists, for removal."""
    categories, series = table["categories"], table["series"]
    small = font * 0.85
    artists: list[Any] = []
    if kind == "pie":
        values = next(iter(series.values()))
        total = float(sum(values))

        def autopct(pct: float) -> str:
            return f"{pct:.0f}%" if style.percent else style.fmt(pct * total / 100)

        wedges, *texts = ax.pie(
            values,
            labels=categories,
            colors=style.palette[: len(values)],
            autopct=autopct if style.value_labels or style.percent else None,
            startangle=90,
            counterclock=False,
            textprops={"fontsize": small},
            wedgeprops={"linewidth": 1, "edgecolor": "white"},
        )
        ax.set_aspect("equal")
        return [*wedges, *(t for group in texts for t in group)]

    x = np.arange(len(categories))
    n = len(series)
    labelled = style.value_labels and len(categories) * n <= 12
    for j, (name, values) in enumerate(series.items()):
        if kind == "bar":
            step = 0.8 / n
            bars = ax.bar(
                x + (j - (n - 1) / 2) * step, values, step * 0.95, label=name, color=style.palette[j], zorder=2
            )
            artists.append(bars)
            if labelled:
                labels = [style.fmt(v) for v in values]
                artists += ax.bar_label(bars, labels=labels, padding=2, fontsize=small * 0.9)
        else:
            artists += ax.plot(
                x,
                values,
                marker="o",
                markersize=font * 0.6,
                linewidth=1.6,
                label=name,
                color=style.palette[j],
                zorder=2,
            )
            if labelled and n == 1:
                artists += [
                    ax.annotate(
                        style.fmt(v),
                        (xi, v),
                        textcoords="offset points",
                        xytext=(0, 5),
                        ha="center",
                        fontsize=small * 0.9,
                    )
                    for xi, v in zip(x, values)
                ]
    return artists
