"""WebDataset shard sets: the sample format (schema), the crash-safe writer with resume
(writer), DALI's index files (wds_index), the worker pipeline (build), the bounded reader every
loader and validation share (reader) and validation (validate). ``vtk shard`` and ``vtk inspect`` are thin commands over these."""
