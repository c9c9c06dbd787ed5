"""The report's tables drawn from the one table model (``vtk.report.tables``): a rich table a
ablation on the terminal, markdown, CSV (numbers only), JSON, and an HTML page."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from vtk.errors import VtkError
from vtk.report import tables as T
from vtk.report.runs import Arm, protocol_line, scorer_line, warnings


def render_table(arms: list[Arm], v2t: bool = False, console=None) -> None:
    """One rich table per ablation; the change vs the baseline arm sits under each value and
    the best value of each column is bold green."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if not console.is_terminal:  # a pipe or a file: do not squeeze the table into 80 columns
        console = Console(width=max(console.width, 132), file=console.file)
    direction = "V2T" if v2t else "T2V"
    for t in T.tables(arms, v2t):
        caption = (f"{'synthetic' if t.synthetic else 'real'} benchmarks; K400-K700: zero-shot "
                   f"top-1 (%), others: {direction} R@1 (%); mean ± sd over "
                   f"{'/'.join(map(str, t.seeds))} seed(s); below: change vs "
                   f"{t.base.arm}; device: {t.device}")
        caption += f"\nprotocol: {t.protocol}" if t.protocol else ""
        caption += f"\nclip-text: {t.scorer}" if t.scorer else ""
        table = Table(title=t.title, caption=caption, caption_justify="left")
        table.add_column("arm", style="bold", no_wrap=True)
        if t.is_filter:
            for name in ("clips", "swapped", "dups"):
                table.add_column(name, justify="right")
        for col in t.cols:
            table.add_column(T.short_header(col), justify="right")
        for row in t.rows:
            cells = [row.arm.arm] + (list(T.planted_cells(row.arm).values()) if t.is_filter
                                     else [])
            for col in t.cols:
                cell = row.cells[col]
                shown = T.text(col, cell)
                if cell.best:
                    shown = f"[bold green]{shown}[/]"
                change = T.change_text(col, cell)
                cells.append(shown + (f"\n[dim]{change}[/]" if change else ""))
            table.add_row(*cells)
        console.print(table)
        for line in t.recovery:
            console.print(f"  {line}", highlight=False)
    for line in warnings(arms):
        console.print(f"[yellow]warning:[/] {line}", highlight=False)


def _markdown_cell(col: str, cell: T.Cell) -> str:
    change = T.change_text(col, cell)
    return T.text(col, cell) + (f" ({change})" if change else "")


def _notes(t: T.Table) -> list[str]:
    """The markdown lines under a table: its protocol card and what its clip-text is."""
    return ([f"- protocol ({t.ablation}): {t.protocol}"] if t.protocol else []) + (
        [f"- clip-text ({t.ablation}): {t.scorer}"] if t.scorer else [])


def _markdown(group: list[T.Table], cols: list[str], synthetic: bool) -> str:
    """The tables of ``group`` as one markdown table (an ``ablation`` column); a filter
    table adds its planted-noise columns and its recovery lines."""
    planted = any(t.is_filter for t in group)
    headers = (["ablation", "arm", "seeds"]
               + (["clips", "swapped kept", "duplicates kept"] if planted else [])
               + [T.header(c, synthetic) for c in cols] + ["device"])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for t in group:
        for row in t.rows:
            cells = [t.ablation, row.arm.arm, str(len(row.arm.runs))]
            cells += list(T.planted_cells(row.arm).values()) if planted else []
            cells += [_markdown_cell(c, row.cells[c]) for c in cols] + [row.arm.device]
            lines.append("| " + " | ".join(cells) + " |")
    notes = []
    for t in group:
        if planted:
            notes += [""] + [f"- {line}" for line in t.recovery]
        notes += _notes(t)
    if notes and notes[0] != "":
        notes = [""] + notes
    return "\n".join(lines + notes).rstrip()


def render_text(arms: list[Arm], fmt: str, v2t: bool = False) -> str:
    """markdown | csv | json. In markdown the filter ablation is a table of its own (with its
    clip and planted-noise columns and the recovery lines)."""
    if fmt == "json":
        return json.dumps(json_rows(arms), indent=2)
    if fmt == "csv":
        return _csv(T.tables(arms, v2t), T.columns(v2t, arms), any(a.synthetic for a in arms))
    every = T.tables(arms, v2t)
    rest = [t for t in every if not t.is_filter]
    filt = [t for t in every if t.is_filter]
    parts = []
    if rest:
        arms_rest = [r.arm for t in rest for r in t.rows]
        parts.append(_markdown(rest, T.columns(v2t, arms_rest),
                               any(a.synthetic for a in arms_rest)))
    if filt:
        arms_filt = [r.arm for t in filt for r in t.rows]
        parts.append(_markdown(filt, T.columns(v2t, arms_filt),
                               any(a.synthetic for a in arms_filt)))
    return "\n\n".join(parts)


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


def _csv(tables: list[T.Table], cols: list[str], synthetic: bool) -> str:
    """Numbers only (pandas reads every cell as a float): mean, sd and the change vs the
    baseline arm each in a column of its own, in the table's units (%, s, MB)."""
    def num(col, x, digits):
        return "" if x is None else round(x, digits)

    headers = ["ablation", "arm", "seeds"]
    for c in cols:
        h = T.header(c, synthetic)
        change = {**dict.fromkeys(T.COSTS, " vs baseline (x)"), "clip_text": " vs baseline"
                  }.get(c, " vs baseline (points)")
        headers += [h, f"{h} sd", h + change]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(headers + ["device", "load above cores", "protocol"])
    for t in tables:
        for row in t.rows:
            out = [t.ablation, row.arm.arm, len(row.arm.runs)]
            for c in cols:
                cell = row.cells[c]
                digits = {"peak_mem_bytes": 1, "clip_text": 4}.get(
                    c, 3 if c in ("train_time_s", "clips_per_s") else 2)
                change = cell.change
                if change is not None:
                    change = (round(change, 3) if c in T.COSTS else
                              round(change, 4) if c == "clip_text" else round(100 * change, 2))
                out += [num(c, T.scaled(c, cell.mean), digits),
                        num(c, T.scaled(c, cell.std), digits), "" if change is None else change]
            w.writerow(out + [row.arm.device, len(row.arm.overloaded), protocol_line([row.arm])])
    return buf.getvalue()


def render_html(arms: list[Arm], out: str | Path, v2t: bool = False) -> Path:
    """``OUT/index.html``: the tables of every ablation and the plot, in vtk view's page style
    (its view.css copied beside), each arm linking to its runs' config.json and summary.json
    (relative links, so the folder can be moved together with the runs)."""
    import html
    import os
    from importlib import resources
    from urllib.parse import quote

    from vtk.report.figure import plot

    out = Path(out)
    esc = html.escape

    def href(path: Path) -> str:
        # quoted, and "./" in front: a run folder named "javascript:..." stays a relative path
        rel = quote(Path(os.path.relpath(path, out)).as_posix())
        return esc(rel if rel.startswith("../") else "./" + rel)
    parts = [f'<p class="warn">warning: {esc(line)}</p>' for line in warnings(arms)]
    for t in T.tables(arms, v2t):
        head = "".join(f"<th>{esc(T.header(c, t.synthetic))}</th>" for c in t.cols)
        rows = []
        for row in t.rows:
            links = " ".join(
                f'<a href="{href(r / name)}">{esc(label)}</a>'
                for r in row.arm.runs for name, label in (("config.json", "config"),
                                                          ("summary.json", "summary"))
                if (r / name).exists())
            cells = []
            for c in t.cols:
                change = T.change_text(c, row.cells[c])
                cells.append(f"<td>{esc(T.text(c, row.cells[c]))}"
                             + (f'<br><span class="dim">{esc(change)}</span>' if change else "")
                             + "</td>")
            rows.append(f"<tr><th>{esc(row.arm.arm)}</th><td>{len(row.arm.runs)}</td>"
                        f"{''.join(cells)}<td>{esc(row.arm.device)}</td><td>{links}</td></tr>")
        parts.append(
            f'<section class="panel"><h2>{esc(t.title)}</h2><p class="dim">'
            f"{'synthetic' if t.synthetic else 'real'} benchmarks; mean ± sd over seeds; below a "
            f"value: the change vs {esc(t.base.arm)}"
            + (f"<br>protocol: {esc(t.protocol)}" if t.protocol else "")
            + (f"<br>clip-text: {esc(t.scorer)}" if t.scorer else "")
            + "</p><table><thead><tr><th>arm</th><th>seeds"
            f"</th>{head}<th>device</th><th>runs</th></tr></thead><tbody>{''.join(rows)}"
            f"</tbody></table></section>")
    plotted = bool(T.metric_cols(arms, v2t))
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
        view_css = resources.files("vtk.view").joinpath("static", "view.css").read_bytes()
        (out / "view.css").write_bytes(view_css)
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
