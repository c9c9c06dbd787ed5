"""The report's one table model: per ablation a ``Table`` of ``Row``s of ``Cell``s (mean, sd,
change vs the baseline arm, best of its column), built once by ``tables`` and drawn by every
renderer (``vtk.report.render``: terminal, markdown, CSV, HTML), with the text of a cell
(``text``, ``change_text``) and of a column's header (``header``) written here once."""

from __future__ import annotations

from dataclasses import dataclass, field

from vtk.report.runs import (
    BASELINE,
    LABELS,
    TITLES,
    Arm,
    columns,
    kind_of,
    protocol_line,
    scorer_line,
)

COSTS = ("train_time_s", "clips_per_s", "peak_mem_bytes")  # compared as a ratio to the baseline
SHORT = {"train_time_s": "time (s)", "clips_per_s": "clips/s", "peak_mem_bytes": "mem (MB)"}
LOWER_IS_BETTER = ("train_time_s", "peak_mem_bytes")


@dataclass
class Cell:
    mean: float | None
    std: float | None = None
    change: float | None = None  # vs the baseline arm: a ratio for costs, a difference else
    best: bool = False  # the best mean of its column in its table (of several arms)


@dataclass
class Row:
    arm: Arm
    cells: dict[str, Cell]
    is_base: bool


@dataclass
class Table:
    """One ablation's arms. ``cols``: the columns it shows (``columns`` of its arms); every
    row also has the cells of ``all_cols`` (the columns of every table, for one combined
    table)."""

    ablation: str
    title: str
    synthetic: bool
    base: Arm
    cols: list[str]
    rows: list[Row]
    protocol: str = ""
    scorer: str = ""
    recovery: list[str] = field(default_factory=list)

    @property
    def is_filter(self) -> bool:
        return kind_of(self.ablation) == "filter"

    @property
    def seeds(self) -> list[int]:
        return sorted({len(r.arm.runs) for r in self.rows})

    @property
    def device(self) -> str:
        return self.rows[0].arm.device


def title(ablation: str) -> str:
    kind, _, rest = ablation.partition(" [")
    if kind == "runs":
        return "Runs"
    return TITLES.get(kind, kind) + (f" [{rest}" if rest else "")


def header(col: str, synthetic: bool) -> str:
    if col == "clip_text":
        return "clip-text"
    tag = " (synth)" if synthetic else ""
    base = col.split("_")[0]
    if col.endswith("_top1"):
        return f"{LABELS[base]}{tag} top-1"
    if "_r1" in col:
        return f"{LABELS[base]}{tag} {col.split('_')[1].upper()} R@1"
    return {"train_time_s": "train time (s)", "clips_per_s": "clips/s",
            "peak_mem_bytes": "peak mem (MB)"}[col]


def short_header(col: str) -> str:
    return SHORT.get(col) or header(col, False).split(" ")[0]


def scaled(col: str, x: float | None) -> float | None:
    """A value in the table's unit: % for metrics, MB for memory, as is otherwise."""
    if x is None:
        return None
    if col == "peak_mem_bytes":
        return x / 2**20
    if col in ("train_time_s", "clips_per_s", "clip_text"):
        return x
    return 100 * x


def text(col: str, cell: Cell) -> str:
    """``mean ± sd`` in the table's unit and precision; ``-`` for no value."""
    if cell.mean is None:
        return "-"
    digits = {"peak_mem_bytes": 0, "clip_text": 3}.get(col, 1)
    out = f"{scaled(col, cell.mean):.{digits}f}"
    return out + (f" ± {scaled(col, cell.std):.{digits}f}" if cell.std is not None else "")


def change_text(col: str, cell: Cell) -> str:
    """The change vs the baseline arm: ``0.52x`` for costs, ``+2.3`` points else."""
    if cell.change is None:
        return ""
    if col in COSTS:
        return f"{cell.change:.2f}x"
    if col == "clip_text":
        return f"{cell.change:+.3f}"
    return f"{100 * cell.change:+.1f}"


def _change(col: str, value: float | None, base: float | None) -> float | None:
    if value is None or base is None:
        return None
    if col in COSTS:
        return value / base if base else None
    return value - base


def tables(arms: list[Arm], v2t: bool = False) -> list[Table]:
    """One Table per ablation, in ablation order, every cell computed here."""
    all_cols = columns(v2t, arms)
    out = []
    for ablation in sorted({a.ablation for a in arms}):
        group = [a for a in arms if a.ablation == ablation]
        base = next((a for a in group if a.arm == BASELINE.get(kind_of(ablation))), group[0])
        best = {}
        for col in all_cols:
            scored = [(a.mean(col), a.arm) for a in group if a.mean(col) is not None]
            if scored and len(group) > 1:
                best[col] = (min if col in LOWER_IS_BETTER else max)(scored)[1]
        rows = [Row(arm, {col: Cell(arm.mean(col), arm.std(col),
                                    None if arm is base else
                                    _change(col, arm.mean(col), base.mean(col)),
                                    best.get(col) == arm.arm)
                          for col in all_cols}, arm is base)
                for arm in group]
        table = Table(ablation, title(ablation), any(a.synthetic for a in group), base,
                      columns(v2t, group), rows, protocol_line(group), scorer_line(group))
        if table.is_filter:
            table.recovery = recovery(group, v2t)
        out.append(table)
    return out


def planted_cells(arm: Arm) -> dict[str, str]:
    """The filter columns: clips trained on, and the planted swapped captions and duplicates
    kept (of the unfiltered corpus's, when it is known)."""
    if not arm.planted:
        return {"clips": "-", "swapped": "-", "duplicate": "-"}
    p = arm.planted[0]  # the same set for every seed
    return {"clips": str(p.get("clips", "-")), "swapped": str(p.get("swapped", "-")),
            "duplicate": str(p.get("duplicate", "-"))}


def metric_cols(arms: list[Arm], v2t: bool) -> list[str]:
    """The benchmark columns some arm has a value in."""
    cols = [c for c in columns(v2t) if c not in COSTS]
    return [c for c in cols if any(a.mean(c) is not None for a in arms)]


def recovery(arms: list[Arm], v2t: bool = False) -> list[str]:
    """Per filter arm: how much of the gap between the unfiltered corpus (``none``) and the
    clean corpus (``clean``) it closes, on K400 top-1 and on the mean of every benchmark run.
    100% recovers the clean-corpus accuracy; 0% is no better than not filtering. A gap under
    one point is reported as none (its share would be noise)."""
    group = {a.arm: a for a in arms if a.kind == "filter"}
    none, clean = group.get("none"), group.get("clean")
    if none is None or clean is None:
        return []
    cols = metric_cols([none, clean], v2t)

    def avg(a: Arm) -> float | None:
        vals = [a.mean(c) for c in cols]
        return sum(vals) / len(vals) if vals and None not in vals else None

    lines = []
    for name, arm in group.items():
        if name in ("none", "clean"):
            continue
        parts = []
        for label, f in (("K400 top-1", lambda a: a.mean("k400_top1")),
                         (f"the mean of {len(cols)} benchmarks", avg)):
            x, lo, hi = f(arm), f(none), f(clean)
            if None in (x, lo, hi):
                continue
            if hi - lo < 0.01:  # a share of a gap under one point is noise, not a finding
                parts.append(f"{label} {100 * x:.1f} (none {100 * lo:.1f}, clean "
                             f"{100 * hi:.1f}: the clean corpus is not a point above the noisy "
                             f"one, no gap to recover)")
            else:
                parts.append(f"{label} {100 * x:.1f}: recovers {100 * (x - lo) / (hi - lo):.0f}"
                             f"% of the gap from none {100 * lo:.1f} to clean {100 * hi:.1f}")
        if parts:
            lines.append(f"{name}: " + "; ".join(parts))
    return lines
