"""From shards to batches: ``build_loader`` (loader.py) and its parts.

- sampling.py: ViCLIP frame indices (train: a random frame per segment; eval: the middle).
- transforms.py: RandomResizedCrop + flip / resize + centre crop, CLIP or ImageNet statistics.
- decoders/: pyav (default), decord, torchcodec behind one ``Decoder`` protocol.
- stream.py: the pipeline run in each loader worker; order.py: the pass order of a worker's
  samples as a resumable position (shuffled groups of shards, resampled draws, DIV weights);
  split.py: exact sharding over DDP ranks x workers (partitions); batches.py: the slot ring
  and the hand-over; epochs.py: endless training batches with a resumable position;
  stats.py: skipped-sample counters.
- cache.py: decode-once memory-mapped frame cache for small corpora (``cache=PATH``).
- dali.py: the DALI pipeline (GPU decode with ``device="mixed"``), fed by vtk in its pass order.
"""
