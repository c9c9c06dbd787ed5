"""Under torch.distributed, only rank 0 decodes the corpus into the frame cache."""

import time

import torch.distributed as dist
import torch.multiprocessing as mp
from data_helpers import write_shards


def _rank(rank, world, init, shards, cache, log):
    import vtk.data.cache as cache_mod
    from vtk.data.loader import build_loader

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    real = cache_mod._run_jobs

    def logged(jobs, workers, progress):  # a slow build: uncoordinated ranks would overlap
        with open(log, "a") as f:
            f.write(f"{rank}\n")
        time.sleep(1.0)
        return real(jobs, workers, progress)

    cache_mod._run_jobs = logged
    loader = build_loader(shards, frames=2, size=16, train=False, batch_size=4, workers=0,
                          cache=cache)
    keys = [k for b in loader for k in b["key"]]
    with open(f"{log}.{rank}", "w") as f:
        f.write(" ".join(keys))
    dist.destroy_process_group()


def test_only_rank_zero_builds_the_cache_and_both_ranks_read_it(tmp_path):
    write_shards(tmp_path / "s", samples=6, per_shard=3, frames=8, h=16, w=16)
    log = tmp_path / "builds.log"
    mp.spawn(_rank, args=(2, f"file://{tmp_path}/store", str(tmp_path / "s"),
                          str(tmp_path / "c"), str(log)), nprocs=2)
    assert log.read_text().split() == ["0"]
    seen = [k for r in range(2) for k in (tmp_path / f"builds.log.{r}").read_text().split()]
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 6
