"""WebDataset shard sets: the sample format (schema), the crash-safe writer with resume
(writer), DALI's index files (wds_index), the worker pipeline (build), the bounded reader every
loader and validation share (reader), validation (validate) and the whole build with its card
(build_set: ``build_shard_set``). ``vtk shard`` and ``vtk inspect`` are thin commands over these."""

from vtk.shards.build_set import build_shard_set  # noqa: F401  (cheap: its heavy imports are lazy)

