"""The report's figure: accuracy and cost against the masking ratio, bars per benchmark for
every other ablation (``plot`` writes it as a PNG)."""

from __future__ import annotations

from pathlib import Path

from vtk.errors import VtkError
from vtk.report import tables as T
from vtk.report.runs import CLS_BENCHES, LABELS, RET_BENCHES, TITLES, Arm


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
                                   marker="o", capsize=3, label=T.header(col, synthetic))
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
        legend, title = BAR_ORDER.get(table, (table, T.title(table)))
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
        ax.set_xticklabels([T.header(c, synthetic).replace(" R@1", "\nR@1")
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
