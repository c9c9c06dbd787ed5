"""The Ray engine (``vtk shard --engine ray``): the same samples as the local engine, built by
tasks on a Ray cluster. docs/scale-out.md has the design at length; in short:

- **The driver plans, tracks and commits; it never holds sample bytes.** It reads the sources
  lazily, skips those the set has completed (``writer.is_done``, from ``stats/``), groups
  the rest into tasks of ``task_sources`` sources and keeps at most ``2 x slots`` tasks
  submitted and not yet committed: that bounds the items, results and staged shards held,
  however many sources there are (backpressure; the driver's memory stays flat).
- **A task (one CPU) runs the local engine's per-source code** (``vtk.shards.build``:
  ``process_source``, ``write_result``) over its sources, in order, into a ``ShardWriter`` of
  its own in a staging folder of the set, ``OUT/.ray-staging/RUN/task-N-XXXXXXXX`` (a fresh
  one per attempt). So a task writes whole shards, straight to the output.
- **Commit**: the driver takes finished tasks in submission order and makes their shards the
  next shards of the set through its writer (``ShardWriter.commit``): ``.idx`` moved in, the
  stats written under the final name, the tar moved last, the order the writer keeps for its
  own shards. A final name still means a
  complete shard; the output of a task whose worker died (Ray retries it, into a new staging
  folder) never gets one. Moves are renames on a file system and server-side copies on an
  object store: no bytes through the driver either way.
- **Resume** reads and writes the same records as the local engine (``stats/NAME-N.json``:
  keys, sources completed, failures), so either engine continues a set the other began. A
  source cut off half-way by a kill is redone with its stored keys passed to its task, whose
  writer drops them (no key twice).
- **Captioners**: with captions on a cluster with GPUs, ``--captioners N`` actors (default:
  GPUs / ``--captioner-gpus``) load the models once and caption the clips tasks send them;
  ``--captioners N`` on a CPU-only cluster makes CPU actors (one CPU each). With no actors
  (the default without GPUs) tasks caption themselves, as local workers do.

Shard boundaries differ from the local engine's: each task's last shard may be short (the
local engine fills every shard but the set's last). Samples, keys, ``json`` and ``txt`` are
the same; order within a task is input order, and tasks are committed in input order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import socket
import sys
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import ray

from vtk import storage
from vtk.errors import VtkError
from vtk.shards.build import SourceResult, Totals, init_worker, process_source, write_result
from vtk.shards.engines.ray_cluster import Reaper, own_processes

STAGING = ".ray-staging"  # hidden: loaders glob OUT/*.tar and never look inside
TASK_RETRIES = 3  # attempts after a worker's death before a source counts as crashing it
POLL_S = 0.5  # progress refresh while waiting for the next task to commit
PROBE_TIMEOUT_S = 120.0


# --- in the workers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What every task of one run shares."""

    staging: str  # OUT/.ray-staging/RUN
    name: str
    per_shard: int
    settings: dict
    cfg: object  # ClipConfig
    codec: str
    spec: object  # CaptionSpec | None
    cwd: str  # the driver's: relative source paths resolve as they do locally
    fetch: object = None  # FetchConfig: how sources at URLs are downloaded


class _ActorCaptioning:
    """``Captioning.run`` done by a captioner actor: the clips' frames go to it through the
    object store, the captions come back. A video captioner's frames are sampled and resized
    here, in the task (``Captioning.prepare_clips``): the actor's GPU only generates."""

    def __init__(self, actor, spec=None):
        self.actor = actor
        self.prepare = None
        if spec is not None:
            from vtk.captions import Captioning

            self.prepare = Captioning(dataclasses.replace(spec, cache_dir=None)).prepare_clips

    def run(self, clips):
        if self.prepare is not None:
            clips = self.prepare(clips)
        return ray.get(self.actor.run.remote(clips))


_READY: dict = {}  # what this worker process has set up (models load once per process)


def _setup(plan: Plan, captioner) -> None:
    key = (plan.staging, None if captioner is None else captioner._actor_id.hex())
    if _READY.get("key") == key:
        return
    if plan.cwd and os.path.isdir(plan.cwd):
        os.chdir(plan.cwd)
    torch = sys.modules.get("torch")  # never imported for this alone: seconds per worker
    if torch is not None:
        torch.set_num_threads(1)  # one CPU per task: intra-op threads would only contend
    captioning = None if captioner is None else _ActorCaptioning(captioner, plan.spec)
    init_worker(plan.cfg, plan.codec, plan.spec, captioning=captioning, fetch=plan.fetch)
    _READY["key"] = key


@ray.remote(num_cpus=1, max_retries=TASK_RETRIES, retry_exceptions=False)
def shard_task(plan: Plan, task: int, items: list, known_keys: list[str], captioner,
               tracker) -> dict:
    """Process ``items`` in order into whole shards under a fresh staging folder; returns
    where they are and their stats (small: no sample bytes)."""
    from vtk.shards.writer import ShardWriter

    _setup(plan, captioner)
    attempt = uuid.uuid4().hex[:8]
    folder = storage.join(plan.staging, f"task-{task:06d}-{attempt}")
    writer = ShardWriter(folder, name=plan.name, samples_per_shard=plan.per_shard,
                         settings=plan.settings)
    writer.skip_keys(known_keys)  # stored by an earlier run: dropped, not written twice
    totals = Totals()
    try:
        for item in items:
            result = process_source(item)
            write_result(writer, result)
            totals.add(result)
            if tracker is not None:
                tracker.add.remote(task, attempt, len(result.samples),
                                   bool(result.failures and not result.samples))
        writer.close({})
    except BaseException:
        writer.abort()
        raise
    # with no samples at all, the trailing record's sources and failures are all to commit
    shards, trailing = writer.written_shards()
    return {"task": task, "folder": folder, "shards": shards, "trailing": trailing,
            "totals": dataclasses.asdict(totals)}


@ray.remote(num_cpus=0)
class Tracker:
    """Sources and clips done by the tasks in flight, as they report them (the progress bar).
    Counts are kept per task and attempt, so a retried task's first attempt is not counted
    twice; the driver forgets a task once it commits it and counts it exactly from then on."""

    def __init__(self):
        self.tasks: dict[int, tuple[str, int, int, int]] = {}

    def add(self, task: int, attempt: str, clips: int, failed: bool) -> None:
        old = self.tasks.get(task)
        if old is None or old[0] != attempt:
            old = (attempt, 0, 0, 0)
        self.tasks[task] = (attempt, old[1] + 1, old[2] + clips, old[3] + int(failed))

    def forget(self, task: int) -> None:
        self.tasks.pop(task, None)

    def totals(self) -> tuple[int, int, int]:
        return tuple(sum(t[i] for t in self.tasks.values()) for i in (1, 2, 3))


class Captioner:
    """A captioner actor: the caption models loaded once, used by every task sent to it."""

    def __init__(self, spec):
        from vtk.captions import Captioning
        from vtk.shards.build import _CountingCache

        self.captioning = Captioning(spec)
        if self.captioning.cache is not None:
            self.captioning.cache = _CountingCache(self.captioning.cache)

    def ready(self) -> bool:
        return True

    def run(self, clips):
        return self.captioning.run(clips)

    def counts(self) -> tuple[int, int]:
        cache = self.captioning.cache
        return (cache.hits, cache.misses) if cache is not None else (0, 0)


def _probe_task(path: str) -> str | None:
    """On one node: can it see what the driver wrote, and write beside it? None if so."""
    try:
        if not storage.exists(path):
            return (f"{path} written by the driver is not there (a folder local to the "
                    f"driver's machine?)")
        beside = f"{path}.ok-{os.getpid()}"
        storage.write_bytes(beside, b"ok")
        storage.remove(beside)
    except Exception as e:  # a read-only mount, no credentials on the node...
        return f"{type(e).__name__}: {e}"
    return None


# --- in the driver -----------------------------------------------------------------------------


@dataclass
class _Slot:
    """One submitted task: its parts (a task split after crashing its worker has several),
    committed in order."""

    task: int
    parts: deque  # of (items, ObjectRef)


class RayEngine:
    name = "ray"

    def __init__(self, address: str | None = None, captioners: int | None = None,
                 captioner_gpus: float | None = None, task_sources: int | None = None,
                 in_flight: int | None = None, retries: int = TASK_RETRIES):
        """``task_sources``, ``in_flight``: fixed task size and window (default: sized from
        the cluster and the set); ``retries``: attempts after a worker's death."""
        if captioners is not None and captioners < 0:
            raise VtkError(f"--captioners {captioners}: give 0 or more")
        if captioner_gpus is not None and not 0 < captioner_gpus <= 64:
            raise VtkError(f"--captioner-gpus {captioner_gpus}: give a share of a GPU (0.25) "
                           f"or a number of GPUs per captioner")
        self.address = address
        self.captioners, self.captioner_gpus = captioners, captioner_gpus
        self.task_sources, self.in_flight, self.retries = task_sources, in_flight, retries
        self.cluster: dict = {}

    # --- the cluster ---------------------------------------------------------------------

    def _connect(self, workers: int | None) -> Reaper | None:
        """Join (or start) the cluster; a Reaper if this call did (and so must leave it)."""
        if ray.is_initialized():  # the caller's own ray.init: use it, leave it up
            return None
        address = self.address
        kwargs: dict = {"logging_level": "WARNING", "log_to_driver": False}
        if address in (None, "local"):
            kwargs.update(num_cpus=workers, include_dashboard=False)
        elif address != "auto" and not address.startswith("ray://"):
            host, _, port = address.rpartition(":")
            try:
                socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
            except (OSError, ValueError) as e:
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                raise VtkError(f"no Ray cluster at {address} ({reason}): start one there with "
                               f"`ray start --head --port {port or 6379}`, or pass "
                               f"--ray-address auto for the one this machine belongs to") from None
        before = own_processes()
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as e:
            raise VtkError(f"no Ray cluster at --ray-address {address} ({e}); start one with "
                           f"`ray start --head`, or leave --ray-address out to start one on "
                           f"this machine") from None
        return Reaper(before)  # a cluster ray.init started here ends with this process

    def describe(self) -> dict:
        return {"name": self.name, **self.cluster}

    # --- the run -------------------------------------------------------------------------

    def run(self, items, writer, cfg, codec, caption_spec, workers=None,
            on_result: Callable | None = None, fetch=None) -> Totals:
        joined = self._connect(workers)
        try:
            return self._run(items, writer, cfg, codec, caption_spec, on_result, fetch)
        finally:
            if joined is not None:
                ray.shutdown()
                joined.close()

    def _run(self, items, writer, cfg, codec, spec, on_result, fetch=None) -> Totals:
        res = ray.cluster_resources()
        cpus, gpus = int(res.get("CPU", 0)), float(res.get("GPU", 0))
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if cpus < 1:
            raise VtkError("the Ray cluster has no CPUs for shard tasks")
        # absolute: workers do not share our cwd
        staging_root = storage.join(storage.absolute(writer.out), STAGING)
        for old in storage.listdir(staging_root):  # runs of a killed driver: never committed
            storage.remove_tree(storage.join(staging_root, old))
        staging = storage.join(staging_root, uuid.uuid4().hex[:12])
        try:
            self._probe(writer.out, staging, nodes)
            actors, actor_cpus = self._start_captioners(spec, cpus, gpus)
        except BaseException:  # refused before any work: leave no staging folder behind
            storage.remove_tree(staging_root)
            raise
        slots = max(1, cpus - actor_cpus)
        window = self.in_flight or 2 * slots
        self.cluster = {"nodes": len(nodes), "cpus": cpus, "gpus": gpus, "task_slots": slots,
                        "captioners": len(actors), "captioner_gpus":
                        self.captioner_gpus if actors and gpus else None}
        plan = Plan(staging, writer.name, writer.per_shard, writer.settings, cfg, codec, spec,
                    os.getcwd(), fetch)
        # live per-source counts only for a progress bar: the actor is one more process
        tracker = Tracker.remote() if on_result is not None else None
        partial = writer.partial_keys()
        totals = Totals()
        queue: deque[_Slot] = deque()

        def submit(task: int, group: list) -> ray.ObjectRef:
            known = [k for it in group for k in partial.get(it.id, ())]
            actor = actors[task % len(actors)] if actors else None
            return shard_task.options(max_retries=self.retries).remote(
                plan, task, group, known, actor, tracker)

        def show() -> None:
            if on_result is None:
                return
            live = ray.get(tracker.totals.remote()) if tracker is not None else (0, 0, 0)
            shown = dataclasses.replace(totals, sources=totals.sources + live[0],
                                        clips=totals.clips + live[1],
                                        failed_sources=totals.failed_sources + live[2])
            on_result(None, shown)

        try:
            for task, group in enumerate(self._groups(items, writer, totals, window, cfg)):
                queue.append(_Slot(task, deque([(group, submit(task, group))])))
                while len(queue) >= window:
                    self._commit(queue.popleft(), writer, totals, tracker, submit, show)
            while queue:
                self._commit(queue.popleft(), writer, totals, tracker, submit, show)
            show()
        finally:
            for slot in queue:  # stopped early (an error, Ctrl-C): nothing more is committed
                for _, ref in slot.parts:
                    ray.cancel(ref, force=True)
            hits = [ray.get(a.counts.remote()) for a in actors] if not queue else []
            totals.caption_hits += sum(h for h, _ in hits)
            totals.caption_misses += sum(m for _, m in hits)
            for actor in [*actors, tracker]:
                if actor is not None:
                    ray.kill(actor)
            storage.remove_tree(staging)
            storage.remove_dir(staging_root)
        return totals

    def _groups(self, items, writer, totals: Totals, window: int, cfg) -> Iterator[list]:
        """Tasks of not-done sources, in input order. A task aims at whole shards
        (samples_per_shard / clips per source so far; before any task is in, one clip per
        source for --clips whole, else at most 32 sources: a video cut into scenes can make
        dozens), but while the first ``window`` tasks' worth of sources is read, a set that
        turns out smaller is spread over ``window`` tasks, so small sets use every slot."""
        per_shard = writer.per_shard

        def todo() -> Iterator:
            for item in items:
                if writer.is_done(item.id):
                    totals.skipped_sources += 1
                    continue
                yield item

        def target() -> int:
            if self.task_sources:
                return self.task_sources
            if not (totals.sources and totals.clips):
                return per_shard if getattr(cfg, "mode", None) == "whole" else \
                    min(per_shard, 32)
            return max(1, min(per_shard, round(per_shard * totals.sources / totals.clips)))

        stream = todo()
        head: list = []
        for item in stream:
            head.append(item)
            if len(head) >= window * target():
                break
        else:  # all of it: as many tasks as the window holds
            size = self.task_sources or max(1, math.ceil(len(head) / window))
            for i in range(0, len(head), size):
                yield head[i:i + size]
            return
        size = target()
        for i in range(0, len(head), size):
            yield head[i:i + size]
        group: list = []
        for item in stream:
            group.append(item)
            if len(group) >= target():
                yield group
                group = []
        if group:
            yield group

    def _commit(self, slot: _Slot, writer, totals: Totals, tracker, submit, show) -> None:
        """Wait for ``slot``'s parts in order and commit each; a part whose worker died more
        than Ray's retries allow is split into one task per source, and a single source that
        keeps killing its worker is recorded as failed ("crash"), as the local engine does."""
        while slot.parts:
            group, ref = slot.parts[0]
            while not ray.wait([ref], timeout=POLL_S)[0]:
                show()
            try:
                out = ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                cause = getattr(e, "cause", None)
                if isinstance(cause, VtkError):
                    raise VtkError(str(cause)) from None
                raise
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError,
                    ray.exceptions.NodeDiedError):
                slot.parts.popleft()
                if len(group) > 1:
                    for item in reversed(group):
                        slot.parts.appendleft(([item], submit(slot.task, [item])))
                    continue
                item = group[0]
                crashed = SourceResult(item.id, item.meta.get("input") or item.describe(),
                                       failures=[{"kind": "crash", "reason":
                                                  f"the Ray worker died on this input "
                                                  f"({self.retries + 1} attempts)"}])
                write_result(writer, crashed)
                totals.add(crashed)
                continue
            slot.parts.popleft()
            for shard in out["shards"]:
                writer.commit(shard)
            trailing = out["trailing"]
            if trailing:
                for source in trailing["sources_completed"]:
                    writer.source_done(source)
                for f in trailing["failures"]:
                    writer.fail(f["source"], f["input"], f["kind"], f["reason"], f.get("key"))
                for d in trailing.get("downloads", []):
                    writer.downloaded(d.pop("source"), d)
            totals.merge(out["totals"])
            storage.remove_tree(out["folder"])
        if tracker is not None:
            tracker.forget.remote(slot.task)
        show()

    def _probe(self, out: str, staging: str, nodes: list) -> None:
        """A probe file written here must be readable, and writable beside, from every node:
        else tasks would write shards the driver cannot commit (a folder local to one
        machine) or fail one by one. One line naming the node instead."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        path = storage.join(staging, f"probe-{uuid.uuid4().hex[:8]}")
        try:
            storage.makedirs(staging)
            storage.write_bytes(path, b"probe")
        except OSError as e:
            raise VtkError(f"cannot write {out}: {e.strerror or e}") from None
        probe = ray.remote(num_cpus=0, max_retries=0)(_probe_task)
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(path) for n in nodes]
        try:
            answers = ray.get(refs, timeout=PROBE_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise VtkError(f"the Ray workers did not answer a check of {out} within "
                           f"{PROBE_TIMEOUT_S:.0f} s (no free worker?)") from None
        finally:
            with contextlib.suppress(Exception):
                storage.remove(path)
        for node, reason in zip(nodes, answers):
            if reason:
                raise VtkError(f"{out}: the Ray workers on node {node.get('NodeManagerAddress')} "
                               f"cannot reach the output ({reason}); give --out a folder every "
                               f"node mounts at the same path, or an object store URL")

    def _start_captioners(self, spec, cpus: int, gpus: float) -> tuple[list, int]:
        """The captioner actors, loaded (a model that does not load fails here, once), and the
        CPUs they hold."""
        if spec is None or getattr(spec, "mode", "none") == "none":
            return [], 0
        frac = self.captioner_gpus
        if frac is not None and not gpus:
            raise VtkError(f"--captioner-gpus {frac}: the Ray cluster has no GPUs; leave it "
                           f"out for CPU captioners")
        n = self.captioners
        if n is None:
            n = int(gpus / (frac or 1.0)) if gpus else 0
        if n == 0:
            return [], 0
        if gpus:
            options = {"num_gpus": frac or 1.0, "num_cpus": 0}
            held = 0
        else:
            if n >= cpus:
                raise VtkError(f"--captioners {n}: the Ray cluster has {cpus} CPUs and each "
                               f"CPU captioner holds one; leave one for the shard tasks")
            options = {"num_cpus": 1}
            held = n
        actor_class = ray.remote(Captioner)
        actors = [actor_class.options(**options).remote(spec) for _ in range(n)]
        try:
            ray.get([a.ready.remote() for a in actors])
        except ray.exceptions.RayActorError as e:
            for a in actors:
                ray.kill(a)
            text = str(e).strip().splitlines()
            raise VtkError(f"a captioner actor did not start: {text[-1] if text else e}") from None
        return actors, held

