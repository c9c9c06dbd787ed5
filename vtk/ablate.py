"""The ablations: caption scale (coarse / fine / both / mixed), video masking ratio, and data
filtering (``run_filter``: no filter / top share by a score / near-duplicate removal, each arm
trained on what its rules keep, beside an optional clean-corpus arm).

Each arm x seed is one run directory ``OUT/<ablation>-<arm>-s<seed>/`` holding the trainer's
files, ``eval.json`` and ``ablation.json`` (which ablation, arm and seed, and a fingerprint of
the training settings, defaults included). An arm trained to its last step with the same
settings and evaluated on every benchmark asked for is skipped on a rerun; an arm killed
mid-training resumes from its checkpoint; an arm trained with other settings is trained again
from scratch. An arm whose training settings equal
a finished run's (e.g. ``captions=fine`` at mask 0 and ``mask=0`` with fine captions) reuses
that run's checkpoint and results instead of training the same thing twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vtk.errors import VtkError
from vtk.fileio import read_json, write_json

# Settings that do not change what is trained: left out of the fingerprint.
_NOT_TRAINING = {"out", "resume", "overwrite", "quiet", "log_every", "checkpoint_every",
                 "workers", "stop_after"}


@dataclass
class Arm:
    ablation: str  # captions | mask | filter
    arm: str  # coarse | fine | both | mixed | "0.5" | "top:clip-text=0.3" ...
    seed: int
    train: dict  # TrainConfig fields for this arm
    # what the data is beyond its path (a filtered set's rules, counts and scorer): part of the
    # fingerprint, so a set filtered again with other scores trains again
    data_id: str = ""
    info: dict = field(default_factory=dict)  # written into ablation.json (the report reads it)

    @property
    def name(self) -> str:
        return f"{self.ablation}-{slug(self.arm)}-s{self.seed}"


def slug(text: str) -> str:
    """A folder-safe form of an arm label: 'top:clip-text=0.3' -> 'top-clip-text-0.3'."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "arm"


def plan(ablation: str, values: list[str], seeds: int, base: dict, seed0: int = 0) -> list[Arm]:
    """The arms of one ablation: every value x ``seeds`` seeds, over the shared ``base``
    training settings (``captions`` for the mask ablation, ``mask`` for the caption one)."""
    arms = []
    for s in range(seed0, seed0 + seeds):
        for v in values:
            cfg = dict(base, seed=s)
            data_id = ""
            if ablation == "captions":
                cfg["captions"] = v
                data_id = _layer_id(base.get("data"), v)
            elif ablation == "mask":
                v = _ratio_label(v)
                cfg["mask"] = float(v)
            else:
                raise ValueError(ablation)
            arms.append(Arm(ablation, v, s, cfg, data_id))
    return arms


def _layer_id(data, captions: str) -> str:
    """For an arm that trains on a caption layer: its sidecars' stamps, so captioning the layer
    again trains the arm again ("" for the built-in caption modes)."""
    from vtk.captions.layer import layer_fingerprint, layer_of

    name = layer_of(captions)
    return layer_fingerprint(data, name) if name and isinstance(data, str) else ""


def _ratio_label(v) -> str:
    r = float(v)
    if not 0.0 <= r < 1.0:
        raise VtkError(f"--ratios: {v} is not a masking ratio in [0, 1)")
    return f"{r:g}"


def fingerprint(train_cfg: dict) -> str:
    """What is trained, with the trainer's defaults filled in: a default that changes between
    versions changes the fingerprint too."""
    from dataclasses import asdict

    from vtk.train.config import TrainConfig

    full = asdict(TrainConfig.from_dict(train_cfg))
    key = {k: v for k, v in sorted(full.items()) if k not in _NOT_TRAINING}
    if key.get("data"):
        key["data"] = str(Path(key["data"]).resolve())
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def trained(run: Path) -> bool:
    """Training ran to its last step (a run stopped by SIGINT/SIGTERM writes a summary with
    ``complete: false`` and resumes from its checkpoint instead)."""
    return bool((read_json(run / "summary.json") or {}).get("complete"))


def _finished(run: Path, benches: list[str], fp: str) -> bool:
    """Trained with these settings to the end, and evaluated on every benchmark asked for."""
    if (read_json(run / "ablation.json") or {}).get("fingerprint") != fp or not trained(run):
        return False
    done = set((read_json(run / "eval.json") or {}).get("benchmarks", {}))
    from vtk.eval.benchmarks import parse_bench

    return {spec.name for spec in parse_bench(benches)} <= done


def _twin(out: Path, fp: str, me: Path, benches: list[str]) -> Path | None:
    """A finished run under ``out`` trained with the same settings."""
    for tag in sorted(out.glob("*/ablation.json")):
        if tag.parent != me and _finished(tag.parent, benches, fp):
            return tag.parent
    return None


def _copy_run(src: Path, dst: Path, skip=("ablation.json",)) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        # not the hidden lock and temps: a hard-linked .lock would tie the two runs' locks
        if f.name in skip or f.name.startswith(".") or not f.is_file():
            continue
        try:
            os.link(f, dst / f.name)  # checkpoints can be large: share the bytes
        except OSError:
            shutil.copy2(f, dst / f.name)


def _train_child(cfg: dict, parent: int) -> None:
    from vtk.train import train
    from vtk.workers import exit_with_parent

    # a killed vtk ablate must not leave its arm training alone, holding the run's lock:
    # SIGTERM, so that the arm checkpoints and stops as on Ctrl-C
    exit_with_parent(parent, signal.SIGTERM)
    train(cfg)


def train_isolated(cfg: dict) -> None:
    """Train one arm in a fresh process: peak RSS (the CPU memory figure) is a per-process
    high-water mark, so arms trained one after another in one process would inherit each
    other's peak. The child checkpoints on SIGINT like ``vtk train``."""
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(target=_train_child,
                                                         args=(cfg, os.getpid()))
    child.start()
    try:
        child.join()
    except KeyboardInterrupt:
        child.join()  # the child got the same SIGINT: let it write its checkpoint
        raise
    if child.exitcode != 0:
        raise VtkError(f"{cfg.get('out')}: training failed (exit code {child.exitcode}); "
                       f"rerun to resume from its last checkpoint")


def run_arms(arms: list[Arm], out: str | Path, benches: list[str], eval_opts: dict | None = None,
             log: Callable[[str], None] = print) -> list[Path]:
    """Train and evaluate every arm that is not finished yet; returns the run folders."""
    from vtk.eval.evaluate import evaluate

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for i, arm in enumerate(arms, 1):
        run = out / arm.name
        runs.append(run)
        head = f"[{i}/{len(arms)}] {arm.ablation}={arm.arm} seed={arm.seed}"
        fp = fingerprint(arm.train)
        if arm.data_id:
            fp = hashlib.sha1(f"{fp}:{arm.data_id}".encode()).hexdigest()[:12]
        if _finished(run, benches, fp):
            log(f"{head}: finished earlier, skipped ({run})")
            continue
        old = read_json(run / "ablation.json")
        fresh = old is None or old.get("fingerprint") != fp
        if old is not None and fresh:
            log(f"{head}: {run} was trained with other settings: training it again")
            shutil.rmtree(run)
        run.mkdir(parents=True, exist_ok=True)
        tag = {"ablation": arm.ablation, "arm": arm.arm, "seed": arm.seed, "fingerprint": fp,
               **arm.info}
        twin = _twin(out, fp, run, benches)
        if twin is not None and fresh:
            _copy_run(twin, run)
            tag["reused_from"] = twin.name
            write_json(run / "ablation.json", tag)
            log(f"{head}: same training settings as {twin.name}, results reused")
            continue
        write_json(run / "ablation.json", tag)
        t0 = time.perf_counter()
        if not trained(run):
            resume = (run / "checkpoint.pt").exists()
            log(f"{head}: training{' (resuming)' if resume else ''} -> {run}")
            train_isolated(dict(arm.train, out=str(run), resume=resume, overwrite=not resume))
            if not trained(run):
                raise VtkError(f"{run}: training stopped before its last step; rerun to resume")
        log(f"{head}: evaluating on {', '.join(benches)}")
        evaluate(run, benches, **(eval_opts or {}))
        log(f"{head}: done in {time.perf_counter() - t0:.0f} s")
    return runs


# --- the filter ablation ---------------------------------------------------------------------

CLEAN_ARM = "clean"
# The filter ablation's default arms. dedup:frames, not dedup:0.95: the tiny model's clip
# embeddings are crowded (a clip's nearest neighbour has cosine 0.998 at the median), so 0.95
# kept 14 of 1000 distinct clips; the synthetic world's planted duplicates are re-renders,
# which the perceptual hashes find (docs/results/filter-ablation.md)
FILTER_RULES = "none; top:clip-text=0.3; dedup:frames"


def parse_arm_rules(text: str) -> list[str]:
    """``"none; top:clip-text=0.3; dedup:0.95"`` -> one normalised rule string per arm (the
    rules in the order they apply, joined by ``+``; ``none`` for no filter). Each is checked
    by ``vtk.curate.parse_rules``, so a bad rule fails before anything trains."""
    from vtk.curate import parse_rules

    arms = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        rules = parse_rules(part)
        label = "none" if rules.is_empty() else "+".join(rules.as_list())
        if label in arms:
            raise VtkError(f"--rules: the arm {label!r} is given twice")
        arms.append(label)
    if not arms:
        raise VtkError("--rules: give at least one arm (e.g. 'none; top:clip-text=0.3')")
    return arms


def scores_for(arms: list[str]) -> tuple[list[str], bool]:
    """(the ``vtk score`` scores the arms' rules need, whether a model must score them)."""
    from vtk.curate import parse_rules

    need: set[str] = set()
    for label in arms:
        rules = parse_rules(label)
        for name in rules.scores_needed():
            need.add("clip-text" if name.startswith("clip-text") else name)
        if rules.dedup == "frames":
            need.add("hashes")
        elif rules.dedup:
            need.add("clip-text")  # the clip embeddings come with the clip-text score
    return sorted(need), "clip-text" in need


def planted(folder: str | Path) -> dict:
    """How many clips of a shard set carry each kind of planted noise (the synthetic world's
    truth, ``synth.noise``): ``{"clips", "swapped", "duplicate"}``; real data counts 0."""
    import tarfile

    from vtk.data.shardset import resolve_shards

    out = {"clips": 0, "swapped": 0, "duplicate": 0}
    for tar in resolve_shards(str(folder)):
        with tarfile.open(tar) as tf:
            for m in tf:
                if not m.isfile() or not m.name.endswith(".json"):
                    continue
                out["clips"] += 1
                try:
                    truth = json.loads(tf.extractfile(m).read()).get("synth") or {}
                except ValueError:
                    continue
                kind = (truth.get("noise") or {}).get("kind")
                if kind in out:
                    out[kind] += 1
    return out


def _filtered_set(data: Path, out: Path, label: str, log) -> dict:
    """OUT/sets/<arm>: ``data`` filtered by ``label`` (kept when it was made with the same
    rules from the same scores); returns its index.json."""
    from vtk.curate import filter_set
    from vtk.curate.sidecar import SCORES_DIR, SUMMARY

    target = out / "sets" / slug(label)
    scores = read_json(data / SCORES_DIR / SUMMARY, {}) or {}
    want = {k: scores.get(k) for k in ("model", "init", "checkpoint", "scores_computed")
            if scores.get(k) is not None}
    card = read_json(target / "index.json")
    cur = (card or {}).get("curation") or {}
    if card and cur.get("parent") == str(data.resolve()) and cur.get("parent_scores") == want \
            and "+".join(cur.get("rules") or []) == label:
        return card
    if target.exists():
        shutil.rmtree(target)
    log(f"filtering {data} by {label} -> {target}")
    return filter_set(data, target, label, progress=False, log=log)


def run_filter(data: str | Path, out: str | Path, arms: list[str], seeds: int, base: dict,
               benches: list[str], seed0: int = 0, scorer: str | Path | None = None,
               clean: str | Path | None = None, eval_opts: dict | None = None,
               log: Callable[[str], None] = print) -> list[Path]:
    """The filter ablation: every arm of ``arms`` (rule strings, ``parse_arm_rules``) x seed
    trained at the same settings and step count on what its rules keep of ``data``, and a
    ``clean`` arm on the shard set ``clean`` (the noise-free twin of a noisy corpus) when given.

    Scores come from ``scorer`` (a run folder), else from the ``none`` arm's first-seed run:
    the model trained on the unfiltered corpus judges that corpus, as InternVid's UMT (trained
    on other data) judged its clips. The scores are written beside ``data``'s tars
    (``vtk score``'s sidecars; scores made with another model are replaced). Each filtered set
    is a new shard set under ``OUT/sets/``; ``ablation.json`` records the arm's rules, its
    clip count and how many planted noisy clips it kept."""
    data, out = Path(data), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    needed, by_model = scores_for(arms)
    if by_model and scorer is None and "none" not in arms:
        raise VtkError("--rules: a score rule needs a model: add a 'none' arm (its run scores "
                       "the corpus) or pass --scorer RUN")

    def arm(label, folder, seed, data_id="", info=None):
        return Arm("filter", label, seed, dict(base, data=str(folder), seed=seed), data_id,
                   {"data": str(folder), **(info or {})})

    first = []
    if "none" in arms:
        info = {"rules": [], "planted": planted(data)}
        first += [arm("none", data, s, info=info) for s in range(seed0, seed0 + seeds)]
    if clean is not None:
        info = {"rules": "clean corpus", "planted": planted(clean)}
        first += [arm(CLEAN_ARM, clean, s, info=info) for s in range(seed0, seed0 + seeds)]
    runs = run_arms(first, out, benches, eval_opts, log) if first else []
    rest = [a for a in arms if a != "none"]
    if not rest:
        return runs
    if needed:
        from vtk.curate import score_set

        model = Path(scorer) if scorer is not None else out / Arm("filter", "none", seed0,
                                                                  {}).name
        kw = dict(model=str(model) if by_model else None, scores=needed, device=base.get(
            "device", "auto"), progress=False, log=log)
        log(f"scoring {data} ({', '.join(needed)}) with {model if by_model else 'no model'}")
        try:
            score_set(data, **kw)
        except VtkError as e:
            if "other settings" not in str(e):
                raise
            log(f"{data}: scored earlier with other settings; scoring again with {model}")
            score_set(data, overwrite=True, **kw)
    later = []
    for label in rest:
        card = _filtered_set(data, out, label, log)
        cur = card.get("curation") or {}
        data_id = json.dumps([cur.get("rules"), cur.get("counts"), cur.get("parent_scores")],
                             sort_keys=True, default=str)
        target = out / "sets" / slug(label)
        info = {"rules": cur.get("rules"), "counts": cur.get("counts"),
                "planted": planted(target), "scorer": (cur.get("parent_scores") or {}).get(
                    "model")}
        kept = int((cur.get("counts") or {}).get("kept", 0))
        batch = base.get("batch_size")
        if batch and kept < batch:
            # the other arms still train and report; this one is named in the log
            log(f"{label}: keeps {kept} clips, fewer than a batch of {batch}: not trained "
                f"(loosen the rule; an embedding threshold depends on the scoring model)")
            continue
        later += [arm(label, target, s, data_id, info) for s in range(seed0, seed0 + seeds)]
    return runs + run_arms(later, out, benches, eval_opts, log)


# --- the WiSE-FT sweep -----------------------------------------------------------------------


def run_wiseft(run: str | Path, out: str | Path, alphas: list[str], benches: list[str], *,
               init: str | None = None, protocol: str = "plain", eval_opts: dict | None = None,
               log: Callable[[str], None] = print) -> list[Path]:
    """The trained run ``run`` evaluated at each WiSE-FT share ``alpha`` of its weights (the
    rest its init's: ``vtk.model.wiseft``), nothing trained. Each alpha is an arm
    ``OUT/wiseft-<alpha>-s<seed>/``: the run's files (hard links, not its eval.json), its own
    eval.json and ablation.json, so ``vtk report OUT`` tables them as the ablation "wiseft"
    (baseline: 1, the trained model). An arm evaluated earlier from the same checkpoint, init
    and protocol on every benchmark asked for is kept."""
    from vtk.eval.benchmarks import parse_bench
    from vtk.eval.evaluate import evaluate
    from vtk.eval.protocol import resolve

    run, out = Path(run), Path(out)
    if not (run / "checkpoint.pt").is_file() or not (run / "config.json").is_file():
        raise VtkError(f"{run}: not a finished run (config.json and checkpoint.pt expected)")
    labels = []
    for a in alphas:
        try:
            value = float(a)
        except ValueError:
            value = -1.0
        if not 0.0 <= value <= 1.0:
            raise VtkError(f"--alphas: {a} is not a share of the trained weights in [0, 1]")
        labels.append(f"{value:g}")
    config = read_json(run / "config.json") or {}
    init = init or config.get("init")
    st = (run / "checkpoint.pt").stat()
    source = {"run": str(run.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
              "init": init, "protocol": protocol}
    fp = hashlib.sha1(json.dumps(source, sort_keys=True).encode()).hexdigest()[:12]
    names = {spec.name for spec in parse_bench(benches)}
    seed = int(config.get("seed") or 0)
    runs = []
    for i, label in enumerate(labels, 1):
        target = out / Arm("wiseft", label, seed, {}).name
        runs.append(target)
        head = f"[{i}/{len(labels)}] wiseft={label}"
        proto = resolve(protocol, wise_ft=float(label)).label
        done = ((read_json(target / "eval.json") or {}).get("protocols") or {}).get(proto) or {}
        if (read_json(target / "ablation.json") or {}).get("fingerprint") == fp \
                and names <= set(done):
            log(f"{head}: evaluated earlier, kept ({target})")
            continue
        if target.exists():
            shutil.rmtree(target)
        _copy_run(run, target, skip=("ablation.json", "eval.json"))
        write_json(target / "ablation.json", {"ablation": "wiseft", "arm": label, "seed": seed,
                                              "fingerprint": fp, **source})
        log(f"{head}: evaluating on {', '.join(benches)}")
        evaluate(target, benches, protocol=protocol, wise_ft=float(label), init=init,
                 **(eval_opts or {}))
    return runs
