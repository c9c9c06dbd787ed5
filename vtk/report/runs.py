"""The runs a report is made of: every finished run under some folders, grouped into the arms
of its ablation, with their means and spreads over seeds.

A run directory written by `vtk ablate` holds `ablation.json` (`ablation`, `arm`, `seed`),
`summary.json` (training time, clips/s, peak memory and its device, the load around the run)
and `eval.json` (every benchmark's metrics). A plain `vtk train` + `vtk eval` run (no
`ablation.json`) is an arm of its own, named by its folder, in the ablation "runs". This module
finds those runs, groups them by (ablation, arm), takes the mean and standard deviation across
seeds (``vtk.report.tables`` lays them out, ``vtk.report.render`` and ``vtk.report.figure``
draw them).

The filter ablation (``vtk ablate filter``) has two more columns: the clips each arm trained on
and how many of the planted noisy clips (the synthetic world's swapped captions and
near-duplicates) its rules kept; ``vtk.report.tables.recovery`` says, per filter, how much of the gap between
the unfiltered corpus and the clean one it closes.
"""

from __future__ import annotations

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


def kind_of(ablation: str) -> str:
    """The ablation a table is of: 'captions [internvid]' (its numbers under a protocol) is
    the caption ablation."""
    return ablation.split(" [")[0]


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
        return kind_of(self.ablation)

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


