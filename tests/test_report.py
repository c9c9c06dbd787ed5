"""`vtk report`: seeds are aggregated, deltas are against the baseline arm, exports agree."""

import json
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from click.testing import CliRunner

from vtk import report
from vtk.commands.report import command


def _run(root, ablation, arm, seed, k400, msrvtt, time_s, mem, load=None, tag=True):
    run = root / f"{ablation}-{arm}-s{seed}"
    run.mkdir(parents=True)
    if tag:
        (run / "ablation.json").write_text(json.dumps({"ablation": ablation, "arm": arm,
                                                       "seed": seed}))
    (run / "summary.json").write_text(json.dumps({"train_time_s": time_s, "clips_per_s": 10.0,
                                                  "peak_mem_bytes": mem, "device": "cpu",
                                                  **({"load": load} if load else {})}))
    (run / "eval.json").write_text(json.dumps({"benchmarks": {
        "synth-k400": {"metrics": {"top1": k400, "top5": 0.9}, "num_classes": 10,
                       "task": "classification",
                       "num_videos": 40, "num_texts": 10},
        "synth-msrvtt": {"metrics": {"t2v_r1": msrvtt, "v2t_r1": msrvtt / 2}, "num_videos": 40,
                         "num_texts": 40, "task": "retrieval"},
    }}))
    return run


@pytest.fixture
def runs(tmp_path):
    _run(tmp_path, "mask", "0", 0, 0.30, 0.20, 100.0, 800 * 2**20)
    _run(tmp_path, "mask", "0", 1, 0.40, 0.30, 110.0, 800 * 2**20)
    _run(tmp_path, "mask", "0.9", 0, 0.20, 0.10, 25.0, 400 * 2**20)
    _run(tmp_path, "captions", "coarse", 0, 0.10, 0.05, 50.0, 2**29)
    _run(tmp_path, "captions", "fine", 0, 0.35, 0.25, 50.0, 2**29)
    # an unfinished run (no eval.json) is ignored
    (tmp_path / "mask-0.5-s0").mkdir()
    (tmp_path / "mask-0.5-s0" / "ablation.json").write_text('{"ablation": "mask", "arm": "0.5"}')
    return tmp_path


def test_collect_aggregates_seeds(runs):
    arms = report.collect([runs])
    assert [(a.ablation, a.arm, len(a.runs)) for a in arms] == [
        ("captions", "coarse", 1), ("captions", "fine", 1), ("mask", "0", 2), ("mask", "0.9", 1)]
    base = arms[2]
    assert base.mean("k400_top1") == pytest.approx(0.35)
    assert base.std("k400_top1") == pytest.approx(0.0707107, rel=1e-4)  # sd of (0.3, 0.4)
    assert base.mean("train_time_s") == pytest.approx(105.0)


def test_json_export_has_every_key(runs):
    rows = json.loads(report.render_text(report.collect([runs]), "json"))
    keys = {"ablation", "arm", "k400_top1", "k600_top1", "k700_top1", "msrvtt_t2v_r1",
            "lsmdc_t2v_r1", "didemo_t2v_r1", "msvd_t2v_r1", "anet_t2v_r1", "train_time_s",
            "peak_mem_bytes", "device", "seeds"}
    assert all(keys <= set(r) for r in rows)
    fine = next(r for r in rows if r["arm"] == "fine")
    assert fine["k400_top1"] == pytest.approx(0.35) and fine["k600_top1"] is None


def test_markdown_shows_deltas_to_the_baseline(runs):
    md = report.render_text(report.collect([runs]), "markdown")
    fine = next(line for line in md.splitlines() if "| fine |" in line)
    assert "35.0 (+25.0)" in fine  # k400: 0.35 vs coarse 0.10
    masked = next(line for line in md.splitlines() if "| 0.9 |" in line)
    assert "25.0 (0.24x)" in masked  # train time 25 s vs 105 s mean at ratio 0
    assert "K400 (synth) top-1" in md


@pytest.mark.floor
def test_cli_table_csv_and_plot(runs, tmp_path):
    res = CliRunner().invoke(command, [str(runs), "--plot", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    assert "Video token masking ratio" in res.output and "Caption scale" in res.output
    assert (tmp_path / "p.png").stat().st_size > 10_000
    res = CliRunner().invoke(command, [str(runs), "--format", "csv", "--v2t"])
    assert res.exit_code == 0 and "MSR-VTT (synth) V2T R@1" in res.output


def test_csv_cells_are_numbers_with_sd_and_change_in_their_own_columns(runs):
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(report.render_text(report.collect([runs]), "csv"))))
    fine = next(r for r in rows if r["arm"] == "fine")
    assert float(fine["K400 (synth) top-1"]) == 35.0
    assert float(fine["K400 (synth) top-1 vs baseline (points)"]) == 25.0
    masked = next(r for r in rows if r["arm"] == "0.9")
    assert float(masked["train time (s) vs baseline (x)"]) == pytest.approx(25 / 105, abs=1e-3)
    base = next(r for r in rows if r["arm"] == "0")
    assert float(base["K400 (synth) top-1 sd"]) == pytest.approx(7.07, abs=0.01)
    for r in rows:  # every metric cell parses as a number or is empty
        for k, v in r.items():
            if k not in ("ablation", "arm", "device") and v:
                float(v)


def test_plain_train_and_eval_runs_report_too(tmp_path):
    _run(tmp_path, "mine", "a", 0, 0.3, 0.2, 10.0, 2**20, tag=False)
    _run(tmp_path, "mine", "b", 0, 0.4, 0.2, 10.0, 2**20, tag=False)
    res = CliRunner().invoke(command, [str(tmp_path), "--format", "markdown"])
    assert res.exit_code == 0, res.output
    assert "| runs | mine-a-s0 | 1 | 30.0 |" in res.output
    assert "| runs | mine-b-s0 | 1 | 40.0 (+10.0) |" in res.output


def test_report_warns_when_the_load_exceeded_the_cores(tmp_path):
    busy = {"loadavg_before": [1.0, 1.0, 1.0], "loadavg_after": [5.0, 2.0, 1.0], "cores": 2}
    calm = {"loadavg_before": [1.0, 1.0, 1.0], "loadavg_after": [2.0, 1.0, 1.0], "cores": 2}
    _run(tmp_path, "mask", "0", 0, 0.3, 0.2, 10.0, 2**20, load=calm)
    _run(tmp_path, "mask", "0.5", 0, 0.3, 0.2, 10.0, 2**20, load=busy)
    res = CliRunner().invoke(command, [str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert ("warning: load average above the cores during 1 of 2 run(s): mask=0.5; their "
            "train time") in " ".join(res.output.split())
    assert "mask=0;" not in res.output and "mask=0," not in res.output
    assert [a.arm for a in report.collect([tmp_path]) if a.overloaded] == ["0.5"]


def test_plot_fits_slow_arms_keeps_legends_off_the_points_and_shows_sd_and_chance(tmp_path):
    from matplotlib.container import BarContainer, ErrorbarContainer

    for seed in (0, 1):
        _run(tmp_path, "mask", "0", seed, 0.3 + 0.1 * seed, 0.2, 100.0, 2**20)
        _run(tmp_path, "mask", "0.9", seed, 0.2, 0.1, 300.0 + seed, 2**20)  # 3x slower
        _run(tmp_path, "captions", "coarse", seed, 0.1, 0.05, 50.0, 2**20)
        _run(tmp_path, "captions", "fine", seed, 0.35 + 0.05 * seed, 0.25, 50.0, 2**20)
    fig = report.figure(report.collect([tmp_path]))
    masking, captions = fig.axes[0], fig.axes[1]
    cost = fig.axes[2]  # the masking plot's twin
    assert cost.get_ylim()[1] > 3.0  # the 3x arm is on the plot
    assert any(isinstance(c, ErrorbarContainer) for c in masking.containers)
    bars = [c for c in captions.containers if isinstance(c, BarContainer)]
    assert bars and all(c.errorbar is not None for c in bars)
    # chance: 1/10 for K400 top-1, 1/40 for MSR-VTT R@1, as dotted lines
    levels = {round(ln.get_ydata()[0], 2) for ln in masking.get_lines()
              if ln.get_linestyle() == ":"}
    assert {10.0, 2.5} <= levels
    chance = report.collect([tmp_path])[0].chance
    assert chance == {"k400_top1": 0.1, "msrvtt_t2v_r1": 0.025, "msrvtt_v2t_r1": 0.025}
    for ax in (masking, captions):
        assert "synthetic" in ax.get_title()
        legend = ax.get_legend().get_window_extent(fig.canvas.get_renderer())
        assert legend.y1 <= ax.get_window_extent(fig.canvas.get_renderer()).y0  # below
    # only the two benchmarks that were run, no empty slots
    assert [t.get_text() for t in captions.get_xticklabels()] == [
        "K400 (synth) top-1", "MSR-VTT (synth) T2V\nR@1"]
    report.plot(report.collect([tmp_path]), tmp_path / "p.png")


def test_eval_table_keeps_r10_and_the_classification_avg_apart():
    import io

    from rich.console import Console

    from vtk.commands.eval import render_table

    result = {"benchmarks": {
        "synth-k400": {"task": "classification", "num_videos": 40, "num_texts": 10,
                       "metrics": {"top1": 0.2, "top5": 0.6, "avg": 0.4}},
        "synth-msrvtt": {"task": "retrieval", "num_videos": 40, "num_texts": 40, "metrics": {
            "t2v_r1": 0.1, "t2v_r5": 0.3, "t2v_r10": 0.55, "t2v_mdr": 9.0, "t2v_mnr": 12.5}}}}
    buf = io.StringIO()
    render_table(result, console=Console(file=buf, width=120))
    lines = buf.getvalue().splitlines()
    header = next(ln for ln in lines if "@10" in ln)
    assert "@10/AVG" not in header and header.split()[header.split().index("@10") + 1] == "AVG"
    k400 = next(ln for ln in lines if "synth-k400" in ln)
    msrvtt = next(ln for ln in lines if "synth-msrvtt" in ln)

    def under(line, value, col):  # value's right edge within the right-justified column
        end = line.index(value) + len(value)
        return header.index(col) <= end <= header.index(col) + len(col)

    assert under(k400, "40.0", "AVG") and under(msrvtt, "55.0", "@10")


def test_html_page_has_the_tables_the_plot_and_links_to_each_runs_files(runs, tmp_path):
    import html.parser

    for run in runs.glob("*-s*"):
        (run / "config.json").write_text("{}")
    plain = _run(runs, "x", "<b>bold</b>", 0, 0.3, 0.2, 10.0, 2**20, tag=False)
    (plain / "config.json").write_text("{}")
    page_dir = tmp_path / "page"
    res = CliRunner().invoke(command, [str(runs), "--format", "json", "--html", str(page_dir)])
    assert res.exit_code == 0, res.output
    page = (page_dir / "index.html").read_text()

    class Links(html.parser.HTMLParser):
        hrefs, imgs, rows = [], [], 0

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            self.hrefs += [a["href"]] if tag in ("a", "link") else []
            self.imgs += [a["src"]] if tag == "img" else []
            self.rows += tag == "tr"

    p = Links()
    p.feed(page)
    # every link and image resolves from the page's folder: the css, the plot, and
    # config.json + summary.json of each of the 6 finished runs
    assert all((page_dir / unquote(h)).resolve().is_file() for h in p.hrefs + p.imgs)
    runs_linked = {Path(unquote(h)).parent.name for h in p.hrefs if h.endswith("config.json")}
    assert len(runs_linked) == 6 and "mask-0-s1" in runs_linked
    assert sum(h.endswith("summary.json") for h in p.hrefs) == 6
    assert p.imgs == ["ablations.png"] and "view.css" in p.hrefs
    assert "Video token masking ratio" in page and "Caption scale" in page
    assert "35.0<br><span class=\"dim\">+25.0</span>" in page
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page  # escaped


def test_a_run_folder_named_like_a_scheme_links_as_a_path_and_the_page_runs_no_script(tmp_path):
    """A run folder called ``javascript:alert(1)`` with the page written beside it: its
    links are relative paths ("./" in front, quoted), and the page's CSP allows no script."""
    import html.parser

    runs = tmp_path / "runs"
    for name in ("javascript:alert(1)", "data:text"):
        run = _run(runs, "x", "y", 0, 0.3, 0.2, 10.0, 2**20, tag=False)
        run.rename(runs / name)
        (runs / name / "config.json").write_text("{}")
    res = CliRunner().invoke(command, [str(runs), "--format", "json", "--html", str(runs)])
    assert res.exit_code == 0, res.output
    page = (runs / "index.html").read_text()

    class Page(html.parser.HTMLParser):
        hrefs, csp = [], None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "a":
                self.hrefs.append(a["href"])
            if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy":
                Page.csp = a["content"]

    p = Page()
    p.feed(page)
    assert len(p.hrefs) == 4 and all(h.startswith("./") for h in p.hrefs)
    assert all(urlsplit(h).scheme == "" for h in p.hrefs)
    assert all((runs / unquote(h)).is_file() for h in p.hrefs)
    assert "default-src 'none'" in p.csp and "script-src" not in p.csp  # no script at all
    assert "<style>" not in page and (runs / "report.css").is_file()  # no inline style either


@pytest.mark.parametrize("file,body,field", [
    ("summary.json", [1, 2], "summary.json is a list"),
    ("eval.json", {"benchmarks": [1]}, "benchmarks is a list"),
    ("summary.json", {"train_time_s": "soon"}, "train_time_s is 'soon'"),
    ("eval.json", {"benchmarks": {"synth-k400": {"metrics": {"top1": "high"}}}}, "k400 top1"),
])
def test_run_files_of_the_wrong_shape_are_one_line_naming_them(tmp_path, file, body, field,
                                                                capsys):
    from data_helpers import run_cli

    run = _run(tmp_path, "mask", "0", 0, 0.3, 0.2, 10.0, 2**20)
    (run / file).write_text(json.dumps(body))
    code, err, _ = run_cli(["report", str(tmp_path)], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert field in err and str(run) in err


def test_plain_runs_say_which_run_their_changes_are_against(tmp_path, capsys):
    _run(tmp_path, "x", "a", 0, 0.3, 0.2, 10.0, 2**20, tag=False)
    _run(tmp_path, "x", "b", 0, 0.4, 0.2, 10.0, 2**20, tag=False)
    report.render_table(report.collect([tmp_path]))
    text = capsys.readouterr().out
    assert "change vs x-a-s0" in text and "None" not in text


def test_an_unwritable_page_folder_is_one_line(runs, tmp_path, capsys):
    """The page's folder read-only (as a user other than root), and its index.html on a full
    disk (/dev/full, for root too): one line naming the folder each time."""
    from data_helpers import run_cli, unwritable_folders

    for out in unwritable_folders(tmp_path, "index.html"):
        code, err, _ = run_cli(["report", str(runs), "--format", "json", "--html", str(out)],
                               capsys)
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert f"cannot write the report page to {out}" in err


def test_plain_runs_plot_and_their_page_has_the_plot(tmp_path):
    """vtk report RUN --plot on plain train + eval runs (no ablation.json) draws them as bars;
    it used to end in 'no finished runs to plot' and write no page."""
    _run(tmp_path, "x", "a", 0, 0.3, 0.2, 10.0, 2**20, tag=False)
    _run(tmp_path, "x", "b", 0, 0.4, 0.2, 10.0, 2**20, tag=False)
    png, page = tmp_path / "out" / "p.png", tmp_path / "out" / "page"
    res = CliRunner().invoke(command, [str(tmp_path / "x-a-s0"), str(tmp_path / "x-b-s0"),
                                       "--plot", str(png), "--html", str(page)])
    assert res.exit_code == 0, res.output
    assert png.stat().st_size > 1000 and (page / "ablations.png").stat().st_size > 1000
    assert 'src="ablations.png"' in (page / "index.html").read_text()


def test_caption_arms_show_the_clip_text_score_of_their_captions(tmp_path):
    """Caption faithfulness per scale: each arm's mean clip-text score of the captions it
    trained on (vtk score with one fixed CLIP over the arms' shard set) beside its accuracy."""
    pytest.importorskip("pyarrow")
    from test_model import save_tiny_clip
    from train_helpers import write_synth_shards

    from vtk.curate import score_set

    clip, shards = tmp_path / "clip", tmp_path / "shards"
    clip.mkdir()
    save_tiny_clip(clip)
    write_synth_shards(shards, n=6, per_shard=6)
    scores = score_set(shards, init=str(clip), scores="clip-text", device="cpu",
                       progress=False)["scores"]
    runs = tmp_path / "runs"
    for arm, k400 in (("coarse", 0.1), ("fine", 0.3), ("both", 0.2), ("mine", 0.2)):
        run = _run(runs, "captions", arm, 0, k400, 0.1, 10.0, 2**20)
        (run / "config.json").write_text(json.dumps({"data": str(shards), "captions": arm}))
    got = {a.arm: a.mean("clip_text") for a in report.collect([runs])}
    want = {"coarse": "clip-text.coarse", "fine": "clip-text.fine", "both": "clip-text.fused"}
    assert got == {**{arm: pytest.approx(scores[col]["mean"]) for arm, col in want.items()},
                   "mine": None}  # a caption layer: not scored by vtk score
    res = CliRunner().invoke(command, [str(runs), "--format", "markdown"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("| ablation | arm | seeds | clip-text | K400 (synth) top-1 |")
    fine = f"{scores['clip-text.fine']['mean']:.3f}"
    assert any(ln.startswith(f"| captions | fine | 1 | {fine} (") for ln in lines), lines
    assert f"- clip-text (captions): mean cosine of each arm's training captions with their " \
           f"clips, scored by vtk score --init {clip}" in res.output
    rows = {r["arm"]: r for r in json.loads(report.render_text(report.collect([runs]), "json"))}
    assert rows["coarse"]["clip_text"] == pytest.approx(scores["clip-text.coarse"]["mean"])
    assert rows["coarse"]["clip_text_scorer"].endswith(f"--init {clip}")
    assert "clip_text" not in rows["mine"]
