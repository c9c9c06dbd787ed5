"""Ablation results as tables, exports and plots.

A run directory written by `vtk ablate` holds `ablation.json` (`ablation`, `arm`, `seed`),
`summary.json` (training time, clips/s, peak memory and its device, the load around the run)
and `eval.json` (every benchmark's metrics). A plain `vtk train` + `vtk eval` run (no
`ablation.json`) is an arm of its own, named by its folder, in the ablation "runs". This module
finds those runs, groups them by (ablation, arm), takes the mean and standard deviation across
seeds and renders them.

The filter ablation (``vtk ablate filter``) has two more columns: the clips each arm trained on
and how many of the planted noisy clips (the synthetic world's swapped captions and
near-duplicates) its rules kept; ``recovery`` says, per filter, how much of the gap between
the unfiltered corpus and the clean one it closes.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from vtk.errors import VtkError
from vtk.fileio import read_json

# (column key, benchmark base name, metric) in table order.
CLS_BENCHES = ("k400", "k600", "k700")
RET_BENCHES = ("msrvtt", "lsmdc", "didemo", "msvd", "anet")
LABELS = {"k400": "K400", "k600": "K600", "k700": "K700", "msrvtt": "MSR-VTT", "lsmdc": "LSMDC",
          "didemo": "DiDeMo", "msvd": "MSVD", "anet": "ANet"}
BASELINE = {"captions": "coarse", "mask": "0", "filter": "none", "wiseft": "1"}
TITLES = {"captions": "Caption scale", "mask": "Video token masking ratio",
          "filter": "Data filtering", "wiseft": "WiSE-FT: the trained weights' share"}


def _kind(ablation: str) -> str:
    """The ablation a table is of: 'captions [internvid]' (its numbers under a protocol) is
    the caption ablation."""
    return ablation.split(" [")[0]


def _title(ablation: str) -> str:
    kind, _, rest = ablation.partition(" [")
    return TITLES.get(kind, kind) + (f" [{rest}" if rest else "")


@dataclass
class Arm:
    """One arm of one ablation, aggregated over its seeds."""

    ablation: str
    arm: str
    runs: list[Path] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)  # column -> one per seed
    device: str = ""
    synthetic: bool = False
    chance: dict[str, float] = field(default_factory=dict)  # column -> chance level
    overloaded: list[Path] = field(default_factory=list)  # runs timed with load > cores
    # the filter ablation: ablation.json's "planted" (clips, swapped, duplicate) per run
    planted: list[dict] = field(default_factory=list)
    cards: list[dict] = field(default_factory=list)  # the protocol card of each number
    scorers: list[str] = field(default_factory=list)  # who scored clip-text, per run

    @property
    def kind(self) -> str:
        return _kind(self.ablation)

    def mean(self, col: str) -> float | None:
        v = self.values.get(col)
        return sum(v) / len(v) if v else None

    def std(self, col: str) -> float | None:
        v = self.values.get(col)
        if not v or len(v) < 2:
            return None
        m = sum(v) / len(v)
        return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


def columns(v2t: bool = False, arms: list[Arm] = ()) -> list[str]:
    """The table's columns; ``clip_text`` (the training captions' faithfulness) first when
    one of ``arms`` has it."""
    direction = "v2t" if v2t else "t2v"
    return (["clip_text"] * any(a.mean("clip_text") is not None for a in arms)
            + [f"{b}_top1" for b in CLS_BENCHES] + [f"{b}_{direction}_r1" for b in RET_BENCHES]
            + ["train_time_s", "clips_per_s", "peak_mem_bytes"])


# The vtk score column of the captions a run trains on, by --captions (mixed draws coarse or
# fine: their mean); a caption layer is not scored by vtk score.
SCORED_CAPTIONS = {"coarse": ("clip-text.coarse",), "fine": ("clip-text.fine",),
                   "both": ("clip-text.fused",), "mixed": ("clip-text.coarse", "clip-text.fine"),
                   "txt": ("clip-text",)}


def clip_text(run: Path) -> tuple[float, str] | None:
    """(mean clip-text score of the captions ``run`` trained on, the scorer) from its shard
    set's ``scores/_summary.json`` (``vtk score DIR --init CLIP``: one fixed model scores every
    caption scale, so the arms of a caption ablation compare). None when the run trained on
    several sets or a URL, on a caption layer, or its set was not scored with clip-text."""
    config = read_json(run / "config.json")
    if not isinstance(config, dict):
        return None
    data, names = config.get("data"), SCORED_CAPTIONS.get(config.get("captions"))
    data = data[0] if isinstance(data, list) and len(data) == 1 else data
    if not isinstance(data, str) or names is None or "://" in data:
        return None
    summary = read_json(Path(data) / "scores" / "_summary.json")
    scores = summary.get("scores") if isinstance(summary, dict) else None
    if not isinstance(scores, dict):
        return None
    means = [(scores.get(n) or {}).get("mean") if isinstance(scores.get(n), dict) else None
             for n in names]
    if not all(isinstance(m, (int, float)) and math.isfinite(m) for m in means):
        return None
    scorer = (f"--init {summary['init']}" if summary.get("init")
              else f"--model {summary.get('model', '?')}")
    return sum(means) / len(means), scorer


def _object(value, where: str) -> dict:
    """``value`` when it is a JSON object, else a VtkError naming the file and field."""
    if not isinstance(value, dict):
        kind = {list: "a list", str: "a text", type(None): "null"}.get(type(value), "a number")
        raise VtkError(f"{where} is {kind}, not an object: not a vtk run's file, or damaged")
    return value


def _number(value, where: str) -> float:
    """A metric or a figure of a run's file as a float; a VtkError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise VtkError(f"{where} is {value!r}, not a number: not a vtk run's file, or damaged")
    return float(value)


def _entries(eval_json: dict, where: str, protocol: str | None = None) -> dict:
    """eval.json's benchmark entries: each benchmark's latest, or those of one protocol."""
    if protocol is None:
        return _object(eval_json.get("benchmarks", {}), f"{where}: benchmarks")
    protocols = _object(eval_json.get("protocols") or {}, f"{where}: protocols")
    return _object(protocols.get(protocol) or {}, f"{where}: protocols.{protocol}")


def _reported(entry: dict, metrics: dict) -> dict:
    """The figures a card reports: DSL-rescored retrieval under a protocol that reports DSL
    (InternVid's numbers are those), else the raw ones."""
    card = entry.get("protocol")
    if isinstance(card, dict) and (card.get("scoring") or {}).get("reported") == "dsl":
        return {**metrics, **{k[4:]: v for k, v in metrics.items() if k.startswith("dsl_")}}
    return metrics


def _bench_metrics(eval_json: dict, where: str = "eval.json", protocol: str | None = None
                   ) -> tuple[dict[str, dict], bool, dict[str, float]]:
    """Benchmark base name ('k400') -> metrics (the reported ones: ``_reported``); whether
    they were synthetic; and the chance level of each column (1 / classes for top-1, 1 /
    candidates for R@1) where counts are recorded. A file of another shape is a VtkError
    naming ``where`` and the field."""
    out, synthetic, chance = {}, False, {}
    benches = _entries(eval_json, where, protocol)
    for name, entry in benches.items():
        entry = _object(entry, f"{where}: benchmarks.{name}")
        base = name.removeprefix("synth-")
        synthetic |= name.startswith("synth-")
        out[base] = _reported(entry, _object(entry.get("metrics", entry),
                                             f"{where}: benchmarks.{name}.metrics"))
        for key in ("num_classes", "num_videos", "num_texts"):
            if entry.get(key) is not None:
                _number(entry[key], f"{where}: benchmarks.{name}.{key}")
        if entry.get("task") == "classification" or "num_classes" in entry:
            if entry.get("num_classes"):
                chance[f"{base}_top1"] = 1 / entry["num_classes"]
            continue
        if entry.get("num_videos"):
            chance[f"{base}_t2v_r1"] = 1 / entry["num_videos"]
        if entry.get("num_texts"):
            chance[f"{base}_v2t_r1"] = 1 / entry["num_texts"]
    return out, synthetic, chance


def _arm_sort_key(arm: Arm):
    order = {"coarse": 0, "fine": 1, "both": 2, "mixed": 3, "none": -2, "clean": -1}
    try:
        return (arm.ablation, 0, float(arm.arm), "")
    except ValueError:
        return (arm.ablation, 1, order.get(arm.arm, 9), arm.arm)


def _runs(d: Path):
    """(run folder, its ablation tag) for every evaluated run under ``d``: vtk ablate's runs
    by their ablation.json, plain train + eval runs by their folder name."""
    seen = set()
    for found in sorted([*d.rglob("ablation.json"), *d.rglob("eval.json")]):
        run = found.parent
        if run in seen:
            continue
        seen.add(run)
        info = read_json(run / "ablation.json")
        if info is None and (run / "summary.json").exists():
            name = str(run.relative_to(d)) if run != d else run.name
            info = {"ablation": "runs", "arm": name}
        if info:
            info = _object(info, f"{run}/ablation.json")
            if not isinstance(info.get("ablation"), str) or "arm" not in info:
                raise VtkError(f"{run}/ablation.json has no ablation and arm: not a vtk run's "
                               f"file, or damaged")
            yield run, info


def overloaded(load: dict | None) -> bool:
    """summary.json's ``load``: the 1-minute load average before or after the run exceeded the
    machine's cores, so its timings were taken on a contended machine."""
    if not isinstance(load, dict) or not isinstance(load.get("cores"), (int, float)):
        return False
    peaks = [x[0] for x in (load.get("loadavg_before"), load.get("loadavg_after"))
             if isinstance(x, list) and x and isinstance(x[0], (int, float))]
    return bool(peaks) and max(peaks) > load["cores"]


def warnings(arms: list[Arm]) -> list[str]:
    """A line naming the arms whose timings were taken with the load above the cores."""
    busy = [a for a in arms if a.overloaded]
    if not busy:
        return []
    runs = sum(len(a.overloaded) for a in busy)
    names = ", ".join(f"{a.ablation}={a.arm}" + (f" ({len(a.overloaded)} of {len(a.runs)})"
                                                 if len(a.overloaded) < len(a.runs) else "")
                      for a in busy)
    return [f"load average above the cores during {runs} of {sum(len(a.runs) for a in arms)} "
            f"run(s): {names}; their train time and clips/s are not comparable"]


def collect(dirs: list[str | Path], protocols: list[str] | None = None) -> list[Arm]:
    """Find every finished run (with eval.json, and ablation.json or summary.json) under
    ``dirs``. ``protocols``: the numbers of each of these protocols (eval.json's
    ``protocols``), each its own table ('captions [internvid]'), instead of each benchmark's
    latest evaluation."""
    arms: dict[tuple[str, str], Arm] = {}
    for d in dirs:
        for run, info, p in ((r, i, p) for r, i in _runs(Path(d)) for p in protocols or [None]):
            summary = _object(read_json(run / "summary.json") or {}, f"{run}/summary.json")
            evaluated = read_json(run / "eval.json")
            # only runs trained to their last step and evaluated (not a run stopped half-way)
            if not evaluated or summary.get("complete") is False:
                continue
            evaluated = _object(evaluated, f"{run}/eval.json")
            if p is not None and not (evaluated.get("protocols") or {}).get(p):
                continue  # not evaluated under this protocol
            ablation = info["ablation"] + (f" [{p}]" if p else "")
            arm = arms.setdefault((ablation, str(info["arm"])), Arm(ablation, str(info["arm"])))
            arm.runs.append(run)
            if isinstance(info.get("planted"), dict):
                arm.planted.append(info["planted"])
            arm.cards += [e["protocol"] for e in _entries(evaluated, f"{run}/eval.json", p).values()
                          if isinstance(e, dict) and isinstance(e.get("protocol"), dict)]
            metrics, synthetic, chance = _bench_metrics(evaluated, f"{run}/eval.json", p)
            arm.synthetic |= synthetic
            arm.chance.update(chance)
            if overloaded(summary.get("load")):
                arm.overloaded.append(run)
            row: dict[str, float] = {}
            for b in CLS_BENCHES:
                if b in metrics and "top1" in metrics[b]:
                    row[f"{b}_top1"] = _number(metrics[b]["top1"], f"{run}/eval.json: {b} top1")
            for b in RET_BENCHES:
                for direction in ("t2v", "v2t"):
                    key = f"{direction}_r1"
                    if b in metrics and key in metrics[b]:
                        row[f"{b}_{key}"] = _number(metrics[b][key], f"{run}/eval.json: {b} {key}")
            scored = clip_text(run)
            if scored is not None:
                row["clip_text"] = scored[0]
                arm.scorers.append(scored[1])
            if summary:
                for key in ("train_time_s", "clips_per_s", "peak_mem_bytes"):
                    if summary.get(key) is not None:
                        row[key] = _number(summary[key], f"{run}/summary.json: {key}")
                arm.device = str(summary.get("device", arm.device))
            for key, value in row.items():
                arm.values.setdefault(key, []).append(float(value))
    return sorted(arms.values(), key=_arm_sort_key)


def _header(col: str, synthetic: bool) -> str:
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


def _fmt(col: str, mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    if col == "peak_mem_bytes":
        mean, std = mean / 2**20, (std / 2**20 if std is not None else None)
        text = f"{mean:.0f}"
        return text + (f" ± {std:.0f}" if std is not None else "")
    if col in ("train_time_s", "clips_per_s"):
        return f"{mean:.1f}" + (f" ± {std:.1f}" if std is not None else "")
    if col == "clip_text":  # a cosine
        return f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def _delta(col: str, value: float | None, base: float | None) -> str:
    if value is None or base is None:
        return ""
    if col in ("train_time_s", "peak_mem_bytes", "clips_per_s"):
        return f"{value / base:.2f}x" if base else ""
    if col == "clip_text":
        return f"{value - base:+.3f}"
    return f"{100 * (value - base):+.1f}"


def _best(arms: list[Arm], col: str) -> str | None:
    """The arm with the best mean in a column (lowest for time and memory)."""
    scored = [(a.mean(col), a.arm) for a in arms if a.mean(col) is not None]
    if not scored:
        return None
    lower = col in ("train_time_s", "peak_mem_bytes")
    return (min if lower else max)(scored)[1]


def table_rows(arms: list[Arm], v2t: bool = False) -> list[dict]:
    """One dict per arm with the formatted cells (for table, markdown and csv)."""
    rows = []
    for ablation in sorted({a.ablation for a in arms}):
        group = [a for a in arms if a.ablation == ablation]
        base = next((a for a in group if a.arm == BASELINE.get(_kind(ablation))), group[0])
        for arm in group:
            cells = {"ablation": ablation, "arm": arm.arm, "seeds": str(len(arm.runs))}
            for col in columns(v2t, arms):
                cell = _fmt(col, arm.mean(col), arm.std(col))
                if arm is not base:
                    d = _delta(col, arm.mean(col), base.mean(col))
                    cell += f" ({d})" if d else ""
                cells[col] = cell
            cells["device"] = arm.device
            rows.append(cells)
    return rows


def json_rows(arms: list[Arm]) -> list[dict]:
    keys = ["k400_top1", "k600_top1", "k700_top1", "msrvtt_t2v_r1", "lsmdc_t2v_r1",
            "didemo_t2v_r1", "msvd_t2v_r1", "anet_t2v_r1", "train_time_s", "peak_mem_bytes"]
    out = []
    for arm in arms:
        row = {"ablation": arm.ablation, "arm": arm.arm}
        for k in keys:
            row[k] = arm.mean(k)
            if arm.std(k) is not None:
                row[f"{k}_std"] = arm.std(k)
        for k in ("msrvtt_v2t_r1", "clips_per_s"):
            if arm.mean(k) is not None:
                row[k] = arm.mean(k)
        row.update(device=arm.device, seeds=len(arm.runs), synthetic=arm.synthetic,
                   runs=[str(r) for r in arm.runs])
        if arm.planted:
            row["planted"] = arm.planted[0]
        if arm.cards:
            row["protocol"] = protocol_line([arm])
        if arm.mean("clip_text") is not None:
            row.update(clip_text=arm.mean("clip_text"), clip_text_scorer=scorer_line([arm]))
        out.append(row)
    return out


_SHORT = {"train_time_s": "time (s)", "clips_per_s": "clips/s", "peak_mem_bytes": "mem (MB)"}


def render_table(arms: list[Arm], v2t: bool = False, console=None) -> None:
    """One rich table per ablation; the difference to the baseline arm sits under each value
    and the best value of each column is bold green."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if not console.is_terminal:  # a pipe or a file: do not squeeze the table into 80 columns
        console = Console(width=max(console.width, 132), file=console.file)
    direction = "V2T" if v2t else "T2V"
    for ablation in sorted({a.ablation for a in arms}):
        group = [a for a in arms if a.ablation == ablation]
        cols = columns(v2t, group)
        synthetic = any(a.synthetic for a in group)
        title = _title(ablation)
        seeds = sorted({len(a.runs) for a in group})
        base = next((a for a in group if a.arm == BASELINE.get(_kind(ablation))), group[0])
        caption = (f"{'synthetic' if synthetic else 'real'} benchmarks; K400-K700: zero-shot "
                   f"top-1 (%), others: {direction} R@1 (%); mean ± sd over "
                   f"{'/'.join(map(str, seeds))} seed(s); below: change vs "
                   f"{base.arm}; device: {group[0].device}")
        card = protocol_line(group)
        caption += f"\nprotocol: {card}" if card else ""
        scored = scorer_line(group)
        caption += f"\nclip-text: {scored}" if scored else ""
        table = Table(title=title, caption=caption, caption_justify="left")
        table.add_column("arm", style="bold", no_wrap=True)
        filt = _kind(ablation) == "filter"
        if filt:
            for name in ("clips", "swapped", "dups"):
                table.add_column(name, justify="right")
        for col in cols:
            name = _SHORT.get(col) or _header(col, False).split(" ")[0]
            table.add_column(name, justify="right")
        best = {col: _best(group, col) for col in cols}
        for arm in group:
            row = [arm.arm]
            if filt:
                row += list(planted_cells(arm).values())
            for col in cols:
                text = _fmt(col, arm.mean(col), arm.std(col))
                if best[col] == arm.arm and len(group) > 1:
                    text = f"[bold green]{text}[/]"
                if arm is not base:
                    delta = _delta(col, arm.mean(col), base.mean(col))
                    text += f"\n[dim]{delta}[/]" if delta else ""
                row.append(text)
            table.add_row(*row)
        console.print(table)
        if filt:
            for line in recovery(group, v2t):
                console.print(f"  {line}", highlight=False)
    for line in warnings(arms):
        console.print(f"[yellow]warning:[/] {line}", highlight=False)


def protocol_line(arms: list[Arm]) -> str:
    """What decides the numbers of these arms, in one line (``vtk.eval.protocol.merged``);
    empty for runs evaluated before eval.json had protocol cards."""
    from vtk.eval.protocol import merged

    cards = [c for a in arms for c in a.cards]
    return merged(cards) if cards else ""


def scorer_line(arms: list[Arm]) -> str:
    """What the clip-text column is, in one line; empty when no arm has one."""
    scorers = sorted({s for a in arms for s in a.scorers})
    if not scorers:
        return ""
    return (f"mean cosine of each arm's training captions with their clips, scored by vtk "
            f"score {' / '.join(scorers)}"
            + (" (different scorers: not comparable)" if len(scorers) > 1 else ""))


def planted_cells(arm: Arm) -> dict[str, str]:
    """The filter columns: clips trained on, and the planted swapped captions and duplicates
    kept (of the unfiltered corpus's, when it is known)."""
    if not arm.planted:
        return {"clips": "-", "swapped": "-", "duplicate": "-"}
    p = arm.planted[0]  # the same set for every seed
    return {"clips": str(p.get("clips", "-")), "swapped": str(p.get("swapped", "-")),
            "duplicate": str(p.get("duplicate", "-"))}


def _metric_cols(arms: list[Arm], v2t: bool) -> list[str]:
    cols = [c for c in columns(v2t) if c not in _SHORT]
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
    cols = _metric_cols([none, clean], v2t)

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


def _filter_markdown(arms: list[Arm], v2t: bool) -> str:
    cols = columns(v2t, arms)
    synthetic = any(a.synthetic for a in arms)
    rows = table_rows(arms, v2t)
    headers = (["ablation", "arm", "seeds", "clips", "swapped kept", "duplicates kept"]
               + [_header(c, synthetic) for c in cols] + ["device"])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for arm, r in zip(arms, rows):
        p = planted_cells(arm)
        cells = [r["ablation"], r["arm"], r["seeds"], p["clips"], p["swapped"], p["duplicate"]]
        lines.append("| " + " | ".join(cells + [r[k] for k in cols] + [r["device"]]) + " |")
    for ablation in sorted({a.ablation for a in arms}):
        group = [a for a in arms if a.ablation == ablation]
        lines += [""] + [f"- {line}" for line in recovery(group, v2t)]
        lines += _notes(ablation, group)
    return "\n".join(lines).rstrip()


def _notes(ablation: str, group: list[Arm]) -> list[str]:
    """The markdown lines under a table: its protocol card and what its clip-text is."""
    card, scored = protocol_line(group), scorer_line(group)
    return ([f"- protocol ({ablation}): {card}"] if card else []) + (
        [f"- clip-text ({ablation}): {scored}"] if scored else [])


def render_text(arms: list[Arm], fmt: str, v2t: bool = False) -> str:
    """markdown | csv | json. In markdown the filter ablation is a table of its own (with its
    clip and planted-noise columns and the recovery lines)."""
    if fmt == "json":
        return json.dumps(json_rows(arms), indent=2)
    filt = [a for a in arms if a.kind == "filter"]
    if fmt == "markdown" and filt:
        rest = [a for a in arms if a.kind != "filter"]
        parts = ([render_text(rest, fmt, v2t)] if rest else []) + [_filter_markdown(filt, v2t)]
        return "\n\n".join(parts)
    cols = columns(v2t, arms)
    rows = table_rows(arms, v2t)
    synthetic = any(a.synthetic for a in arms)
    headers = ["ablation", "arm", "seeds"] + [_header(c, synthetic) for c in cols] + ["device"]
    keys = ["ablation", "arm", "seeds"] + cols + ["device"]
    if fmt == "csv":
        return _csv(arms, cols, synthetic)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        lines.append("| " + " | ".join(r[k] for k in keys) + " |")
    notes = [line for ablation in sorted({a.ablation for a in arms})
             for line in _notes(ablation, [a for a in arms if a.ablation == ablation])]
    return "\n".join(lines + [""] * bool(notes) + notes)


def _csv(arms: list[Arm], cols: list[str], synthetic: bool) -> str:
    """Numbers only (pandas reads every cell as a float): mean, sd and the change vs the
    baseline arm each in a column of its own, in the table's units (%, s, MB)."""
    def scaled(col, x):
        if x is None:
            return ""
        if col == "peak_mem_bytes":
            return round(x / 2**20, 1)
        if col == "clip_text":
            return round(x, 4)
        return round(x, 3) if col in ("train_time_s", "clips_per_s") else round(100 * x, 2)

    headers = ["ablation", "arm", "seeds"]
    for c in cols:
        h = _header(c, synthetic)
        change = {**dict.fromkeys(_SHORT, " vs baseline (x)"), "clip_text": " vs baseline"
                  }.get(c, " vs baseline (points)")
        headers += [h, f"{h} sd", h + change]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(headers + ["device", "load above cores", "protocol"])
    for ablation in sorted({a.ablation for a in arms}):
        group = [a for a in arms if a.ablation == ablation]
        base = next((a for a in group if a.arm == BASELINE.get(_kind(ablation))), group[0])
        for arm in group:
            row = [ablation, arm.arm, len(arm.runs)]
            for c in cols:
                m, b = arm.mean(c), base.mean(c)
                if arm is base or m is None or b is None:
                    change = ""
                elif c in _SHORT:
                    change = round(m / b, 3) if b else ""
                elif c == "clip_text":
                    change = round(m - b, 4)
                else:
                    change = round(100 * (m - b), 2)
                row += [scaled(c, m), scaled(c, arm.std(c)), change]
            w.writerow(row + [arm.device, len(arm.overloaded), protocol_line([arm])])
    return buf.getvalue()


def plot(arms: list[Arm], path: str | Path, v2t: bool = False) -> Path:
    """The figure of ``figure`` as a PNG."""
    import matplotlib.pyplot as plt

    fig = figure(arms, v2t)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")  # the legends below the axes included
    plt.close(fig)
    return path


# the bar charts' order, legend title and axis title
BAR_ORDER = {"captions": ("captions", "Caption scale"), "filter": ("filter", "Data filtering"),
             "wiseft": ("WiSE-FT share", TITLES["wiseft"]), "runs": ("run", "Runs")}


def figure(arms: list[Arm], v2t: bool = False):
    """Masking: accuracy and R@1 against ratio, time and memory on a second axis.
    Every other table (captions, filters, WiSE-FT, plain runs): grouped bars per benchmark.
    Only the benchmarks that were run; error bars are
    the sd over seeds; dotted lines are chance (1 / classes, 1 / candidates)."""
    import matplotlib  # imported here to keep the CLI's start-up quick

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    direction = "v2t" if v2t else "t2v"
    every = [f"{b}_top1" for b in CLS_BENCHES] + [f"{b}_{direction}_r1" for b in RET_BENCHES]
    metric_cols = [c for c in every if any(a.mean(c) is not None for a in arms)]
    # one protocol's numbers: the first table's (report --protocol draws the first one given)
    first = sorted({a.ablation.partition(" [")[2] for a in arms})[0]
    arms = [a for a in arms if a.ablation.partition(" [")[2] == first]
    mask = [a for a in arms if a.kind == "mask"]
    # every other table (captions, filter, wiseft, plain train + eval runs): bars per benchmark
    kinds = sorted({a.kind for a in arms if a.kind != "mask"},
                   key=lambda k: (list(BAR_ORDER).index(k) if k in BAR_ORDER else 9, k))
    bars = [([a for a in arms if a.kind == k], k) for k in kinds]
    n = int(bool(mask)) + len(bars)
    if n == 0 or not metric_cols:
        raise VtkError("nothing to plot: no run has a top-1 or R@1 of the report's benchmarks "
                       f"({', '.join(LABELS.values())})")
    synthetic = any(a.synthetic for a in arms)
    kind = "synthetic" if synthetic else "real"
    fig, axes = plt.subplots(1, n, figsize=(7.5 * n, 5.2), squeeze=False)
    ax_i = 0

    def sd(a, c):
        v = a.std(c)
        return 100 * v if v is not None else 0.0

    if mask:
        ax = axes[0][ax_i]
        ax_i += 1
        ratios = [float(a.arm) for a in mask]
        for col in metric_cols:
            ys = [a.mean(col) for a in mask]
            if all(y is not None for y in ys):
                line = ax.errorbar(ratios, [100 * y for y in ys], yerr=[sd(a, col) for a in mask],
                                   marker="o", capsize=3, label=_header(col, synthetic))
                chance = max((a.chance.get(col, 0) for a in mask), default=0)
                if chance:
                    ax.axhline(100 * chance, ls=":", lw=1, color=line[0].get_color())
        ax.set_xlabel("video token masking ratio")
        ax.set_ylabel("top-1 / R@1 (%)  (dotted: chance)")
        # cost relative to the first (unmasked) arm: time and memory share one scale
        ax2 = ax.twinx()
        top = 1.0
        for col, style, name in (("train_time_s", "k--s", "train time"),
                                 ("peak_mem_bytes", "k:^", "peak memory")):
            ys = [a.mean(col) for a in mask]
            if all(v is not None for v in ys) and ys[0]:
                rel = [v / ys[0] for v in ys]
                top = max(top, *rel)
                ax2.plot(ratios, rel, style, label=f"{name} (x ratio {mask[0].arm})")
        ax2.set_ylim(0, top * 1.15)  # every arm fits, however slow
        ax2.set_ylabel(f"cost relative to ratio {mask[0].arm} ({mask[0].device.split(':')[0]})")
        handles = [h for a in (ax, ax2) for h in a.get_legend_handles_labels()[0]]
        labels = [lb for a in (ax, ax2) for lb in a.get_legend_handles_labels()[1]]
        # below the axes, never over the points
        ax.legend(handles, labels, fontsize=7, loc="upper center", ncol=3,
                  bbox_to_anchor=(0.5, -0.14))
        ax.set_title(f"Masking ratio ({kind} benchmarks)")
    for group, table in bars:
        legend, title = BAR_ORDER.get(table, (table, _title(table)))
        ax = axes[0][ax_i]
        ax_i += 1
        width = 0.8 / len(group)
        xs = range(len(metric_cols))
        for i, a in enumerate(group):
            ys = [100 * (a.mean(c) or 0) for c in metric_cols]
            ax.bar([x + i * width for x in xs], ys, width, label=a.arm,
                   yerr=[sd(a, c) for c in metric_cols], capsize=2)
        for x, c in zip(xs, metric_cols, strict=True):
            chance = max((a.chance.get(c, 0) for a in group), default=0)
            if chance:
                ax.hlines(100 * chance, x - width / 2, x + 0.8 - width / 2, colors="k",
                          linestyles=":", label="chance" if x == 0 else None)
        ax.set_xticks([x + 0.4 - width / 2 for x in xs])
        ax.set_xticklabels([_header(c, synthetic).replace(" R@1", "\nR@1")
                            for c in metric_cols], fontsize=7, rotation=30)
        ax.set_ylabel("top-1 / R@1 (%)")
        ax.legend(title=legend, fontsize=7, loc="upper center",
                  ncol=min(len(group) + 1, 4), bbox_to_anchor=(0.5, -0.2))
        ax.set_title(f"{title} ({kind} benchmarks)")
    seeds = sorted({len(a.runs) for a in arms})
    if max(seeds) > 1:
        fig.suptitle(f"mean ± sd over {'/'.join(map(str, seeds))} seeds", fontsize=9)
    fig.tight_layout()
    return fig


def render_html(arms: list[Arm], out: str | Path, v2t: bool = False) -> Path:
    """``OUT/index.html``: the tables of every ablation and the plot, in vtk view's page style
    (its view.css copied beside), each arm linking to its runs' config.json and summary.json
    (relative links, so the folder can be moved together with the runs)."""
    import html
    import os
    from urllib.parse import quote

    out = Path(out)
    esc = html.escape

    def href(path: Path) -> str:
        # quoted, and "./" in front: a run folder named "javascript:..." stays a relative path
        rel = quote(Path(os.path.relpath(path, out)).as_posix())
        return esc(rel if rel.startswith("../") else "./" + rel)
    parts = []
    for line in warnings(arms):
        parts.append(f'<p class="warn">warning: {esc(line)}</p>')
    for ablation in sorted({a.ablation for a in arms}):
        group = [a for a in arms if a.ablation == ablation]
        synthetic = any(a.synthetic for a in group)
        base = next((a for a in group if a.arm == BASELINE.get(_kind(ablation))), group[0])
        title = "Runs" if ablation == "runs" else _title(ablation)
        card, scored = protocol_line(group), scorer_line(group)
        cols = columns(v2t, group)
        head = "".join(f"<th>{esc(_header(c, synthetic))}</th>" for c in cols)
        rows = []
        for arm in group:
            links = " ".join(
                f'<a href="{href(r / name)}">{esc(label)}</a>'
                for r in arm.runs for name, label in (("config.json", "config"),
                                                      ("summary.json", "summary"))
                if (r / name).exists())
            cells = []
            for c in cols:
                text = esc(_fmt(c, arm.mean(c), arm.std(c)))
                if arm is not base:
                    d = _delta(c, arm.mean(c), base.mean(c))
                    text += f'<br><span class="dim">{esc(d)}</span>' if d else ""
                cells.append(f"<td>{text}</td>")
            rows.append(f"<tr><th>{esc(arm.arm)}</th><td>{len(arm.runs)}</td>{''.join(cells)}"
                        f"<td>{esc(arm.device)}</td><td>{links}</td></tr>")
        parts.append(
            f'<section class="panel"><h2>{esc(title)}</h2><p class="dim">'
            f"{'synthetic' if synthetic else 'real'} benchmarks; mean ± sd over seeds; below a "
            f"value: the change vs {esc(base.arm)}"
            + (f"<br>protocol: {esc(card)}" if card else "")
            + (f"<br>clip-text: {esc(scored)}" if scored else "")
            + "</p><table><thead><tr><th>arm</th><th>seeds"
            f"</th>{head}<th>device</th><th>runs</th></tr></thead><tbody>{''.join(rows)}"
            f"</tbody></table></section>")
    plotted = bool(_metric_cols(arms, v2t))
    if plotted:
        parts.append('<section class="panel"><h2>Plot</h2>'
                     '<img src="ablations.png" alt="ablation plot" class="plot"></section>')
    page = ("<!doctype html><html><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{REPORT_CSP}">'
            '<title>vtk report</title><link rel="stylesheet" href="view.css">'
            '<link rel="stylesheet" href="report.css"></head><body><header><h1>'
            '<span class="brand">vtk</span> report</h1></header><main>'
            + "".join(parts) + "</main></body></html>\n")
    try:
        out.mkdir(parents=True, exist_ok=True)
        if plotted:
            plot(arms, out / "ablations.png", v2t=v2t)
        (out / "view.css").write_bytes((Path(__file__).parent / "view" / "static" /
                                        "view.css").read_bytes())
        (out / "report.css").write_text(REPORT_CSS, encoding="utf-8")
        (out / "index.html").write_text(page, encoding="utf-8")
    except OSError as e:
        raise VtkError(f"cannot write the report page to {out}: {e.strerror or e}") from None
    return out / "index.html"


# The page runs no script: the policy says so to the browser (a link a run folder's name
# made, or a value in a run's file, can never execute), as vtk view's page header does.
REPORT_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
              "form-action 'none'")
REPORT_CSS = """main{display:block} table{border-collapse:collapse;margin:8px 0}
td,th{padding:4px 8px;border-bottom:1px solid var(--line);text-align:right}
tbody th{text-align:left} .dim{color:var(--dim)}
.warn{color:var(--err);background:var(--errbg);padding:6px 10px;border-radius:6px}
.panel{margin-bottom:16px} .plot{max-width:100%}
"""
