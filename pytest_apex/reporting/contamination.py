"""Charts of cross-user contamination: who saw whose data, and when a breached stream saw it.

Pure renderers: plain values in, a PNG file out, nothing read from pytest or the engines.
Drawn with matplotlib's Agg canvas on a `Figure` of their own (never pyplot), so nothing
needs a display and no global backend or figure state is touched; matplotlib is imported
on first use, not when the plugin loads.

The matrix stays readable from a 150-user CI run to a 2,000-user benchmark: up to
`MAX_CELLS` users get a row and a column each; beyond that only the users involved in a
breach are drawn (with a note saying how many were left out, all clean), and when even
those are too many, users are grouped into bins of consecutive users.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, cast

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure

MAX_CELLS: Final = 150  # rows (and columns) of the matrix before users are selected or binned
_LABELLED_CELLS: Final = 40  # up to this many rows, every row is labelled
_ANNOTATED_CELLS: Final = 25  # up to this many rows, every non-zero cell shows its count
_RINGED_CELLS: Final = 200  # up to this many breached cells, each is ringed (else: a pattern)
_LABEL_CHARS: Final = 18
_DPI: Final = 100
MARKERS: Final = ("own", "foreign", "late")
# How each kind of frame looks on the timeline: (matplotlib marker, colour, size, legend).
_MARKER_STYLE: Final[Mapping[str, tuple[str, str, float, str]]] = {
    "own": ("o", "#9e9e9e", 18.0, "own data"),
    "foreign": ("X", "#c62828", 70.0, "another user's data, in a run"),
    "late": ("^", "#ef6c00", 60.0, "another user's data, outside a run"),
}


def render_contamination_matrix(
    labels: Sequence[str],
    counts: Mapping[tuple[int, int], int],
    path: Path,
    *,
    title: str = "",
) -> Path:
    """Draw the viewer x owner matrix of sightings as a PNG at `path`; returns `path`.

    `labels[i]` names user i; `counts[(viewer, owner)]` is how often `viewer` received
    `owner`'s data. The diagonal (a user's own data) is not a breach and is ignored. A
    clean run draws an all-clear matrix whose caption says how many users were checked.
    """
    import numpy as np

    users = len(labels)
    breaches = _breaches(counts, users)
    total = sum(breaches.values())
    involved = sorted({v for v, _ in breaches} | {o for _, o in breaches})

    bin_size = 1
    if users <= MAX_CELLS:
        rows = list(range(users))
        note = ""
    elif 0 < len(involved) <= MAX_CELLS:
        rows = involved
        note = (
            f"showing the {len(involved)} of {users} users involved in a breach; "
            f"the other {users - len(involved)} received nothing of anyone and leaked nothing"
        )
    else:
        bin_size = math.ceil(users / MAX_CELLS)
        rows = list(range(0, users, bin_size))
        note = f"users grouped in bins of {bin_size} consecutive users"

    position = {user: i for i, user in enumerate(rows)}
    matrix = np.zeros((len(rows), len(rows)), dtype=float)
    for (viewer, owner), count in breaches.items():
        if bin_size > 1:
            matrix[viewer // bin_size, owner // bin_size] += count
        else:
            matrix[position[viewer], position[owner]] += count
    if bin_size > 1:
        names = [f"{first + 1}-{min(first + bin_size, users)}" for first in rows]
    else:
        names = [_short(labels[user]) for user in rows]

    figure, axes = _figure(8.5, 8.0)
    _draw_matrix(axes, figure, matrix, names)
    axes.set_xlabel("owner (whose data it was)")
    axes.set_ylabel("viewer (who received it)")
    pairs = len(breaches)
    if total:
        caption = (
            f"{users} users, {total} breach{'es' * (total != 1)}: {pairs} viewer/owner "
            f"pair{'s' * (pairs != 1)}, {len({v for v, _ in breaches})} viewer(s) "
            f"received another user's data"
        )
        colour = "#c62828"
    else:
        caption = f"all clear: {users} users, 0 breaches (no user received another user's data)"
        colour = "#2e7d32"
    axes.set_title(title or "cross-user contamination", fontsize=12)
    figure.text(0.5, 0.035, caption, ha="center", fontsize=10, color=colour, wrap=True)
    if note:
        figure.text(0.5, 0.01, note, ha="center", fontsize=8, color="#555555", wrap=True)
    figure.subplots_adjust(left=0.2, right=0.88, top=0.93, bottom=0.26)
    return _save(figure, path)


def stream_timeline(
    frames: Sequence[tuple[float, str, str]], path: Path, *, title: str = ""
) -> Path:
    """Draw one stream's frames over time as a PNG at `path`; returns `path`.

    Each frame is ``(time, frame type, marker)``: the time in seconds (any origin; drawn
    from the first frame), its type (one row each, in order of first appearance), and
    ``own``, ``foreign`` (another user's data within a run) or ``late`` (another user's
    data outside any run's window: between runs, after the last one).
    """
    unknown = sorted({m for _, _, m in frames} - set(MARKERS))
    if unknown:
        raise ValueError(f"unknown frame marker(s) {unknown}; accepted: {', '.join(MARKERS)}")
    types = list(dict.fromkeys(kind for _, kind, _ in frames))
    row = {kind: i for i, kind in enumerate(types)}
    start = min((t for t, _, _ in frames), default=0.0)

    figure, axes = _figure(10.0, min(2.0 + 0.45 * max(len(types), 1), 9.0))
    for marker in MARKERS:
        picked = [(t - start, row[kind]) for t, kind, m in frames if m == marker]
        if not picked:
            continue
        shape, colour, size, legend = _MARKER_STYLE[marker]
        xs, ys = zip(*picked, strict=True)
        axes.scatter(
            xs,
            ys,
            marker=shape,
            s=size,
            c=colour,
            label=f"{legend} ({len(picked)})",
            zorder=3 if marker != "own" else 2,
            linewidths=0,
        )
    axes.set_yticks(range(len(types)), [_short(t) for t in types], fontsize=8)
    axes.set_ylim(-0.75, max(len(types), 1) - 0.25)
    axes.invert_yaxis()
    axes.set_xlabel("seconds since the stream's first frame")
    axes.grid(axis="x", color="#eeeeee")
    axes.set_title(title or "stream timeline", fontsize=12)
    if frames:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        counted = {m: sum(1 for _, _, mk in frames if mk == m) for m in MARKERS}
        caption = f"{len(frames)} frames: " + ", ".join(f"{n} {m}" for m, n in counted.items())
    else:
        caption = "no frames"
    figure.text(0.5, 0.01, caption, ha="center", fontsize=9)
    figure.subplots_adjust(left=0.18, right=0.78, top=0.88, bottom=0.22)
    return _save(figure, path)


# --- helpers ----------------------------------------------------------------------------------


def _breaches(counts: Mapping[tuple[int, int], int], users: int) -> dict[tuple[int, int], int]:
    """The off-diagonal, non-zero counts; an index outside the labels is a caller's bug."""
    found: dict[tuple[int, int], int] = {}
    for (viewer, owner), count in counts.items():
        if not (0 <= viewer < users and 0 <= owner < users):
            raise ValueError(f"counts name user ({viewer}, {owner}), but there are {users} labels")
        if viewer != owner and count > 0:
            found[viewer, owner] = found.get((viewer, owner), 0) + int(count)
    return found


def _short(label: str) -> str:
    return label if len(label) <= _LABEL_CHARS else label[: _LABEL_CHARS - 1] + "…"


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(figure)  # the figure renders through Agg: no display, no pyplot
    return figure, figure.add_subplot()


def _draw_matrix(axes: Axes, figure: Figure, matrix: object, names: Sequence[str]) -> None:
    import numpy as np
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.ticker import FuncFormatter, NullFormatter

    data = np.asarray(matrix, dtype=float)
    size = len(names)
    peak = float(data.max()) if data.size else 0.0
    cmap = _reds()
    norm = LogNorm(vmin=1, vmax=peak) if peak > 1 else Normalize(vmin=0, vmax=1)
    masked = np.ma.masked_less_equal(data, 0)
    axes.set_facecolor("white")
    if size:
        # A user's own cells (a bin's own, when binned) in light grey: the eye finds the
        # diagonal, and nothing of it reads red.
        own = np.full_like(data, np.nan)
        np.fill_diagonal(own, 1.0)
        axes.imshow(own, cmap=_greys(), vmin=0, vmax=4, interpolation="nearest", aspect="auto")
    image = axes.imshow(masked, cmap=cmap, norm=norm, interpolation="nearest", aspect="auto")
    if peak > 0:
        bar = figure.colorbar(image, ax=axes, fraction=0.04, pad=0.02)
        bar.set_label("sightings")
        # Counts, not powers of ten: 1, 2, 5, 10, ... up to the peak, whatever the scale.
        bar.set_ticks(_count_ticks(peak))
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        bar.ax.yaxis.set_minor_formatter(NullFormatter())
    ticks = range(size) if size <= _LABELLED_CELLS else _spread(size, 15)
    axes.set_xticks(list(ticks), [names[i] for i in ticks], rotation=90, fontsize=7)
    axes.set_yticks(list(ticks), [names[i] for i in ticks], fontsize=7)
    axes.set_xlim(-0.5, size - 0.5)
    axes.set_ylim(size - 0.5, -0.5)
    viewers, owners = np.nonzero(data)
    if size > _ANNOTATED_CELLS and 0 < len(viewers) <= _RINGED_CELLS:
        # A cell is a few pixels wide at this size: ring every breach so none is missed.
        axes.scatter(owners, viewers, s=90, facecolors="none", edgecolors="#c62828", linewidths=1.2)
    if size <= _ANNOTATED_CELLS:
        for viewer, owner in zip(viewers, owners, strict=True):
            axes.text(
                cast(float, owner),  # numpy's integers: matplotlib takes them as coordinates
                cast(float, viewer),
                f"{int(data[viewer, owner])}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if data[viewer, owner] > math.sqrt(max(peak, 1)) else "black",
            )


def _count_ticks(peak: float) -> list[float]:
    if peak <= 1:
        return [0.0, 1.0]
    ticks = [m * 10**e for e in range(int(math.log10(peak)) + 1) for m in (1, 2, 5)]
    return sorted({float(t) for t in ticks if t < peak} | {float(peak)})


def _spread(size: int, count: int) -> list[int]:
    step = max(1, math.ceil(size / count))
    return list(range(0, size, step))


def _reds() -> Colormap:
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    # Reds without its near-white start: a single sighting must read red, not blank.
    cmap = ListedColormap(colormaps["Reds"](np.linspace(0.4, 1.0, 256)), name="apex_reds")
    return cmap.with_extremes(bad=(0, 0, 0, 0))  # transparent where nothing leaked


def _greys() -> Colormap:
    from matplotlib import colormaps

    return colormaps["Greys"].with_extremes(bad=(0, 0, 0, 0))  # transparent off the diagonal


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(
        path, format="png", dpi=_DPI, bbox_inches="tight"
    )  # the legend sits outside the axes
    return path
