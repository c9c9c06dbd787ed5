"""From shards to batches: ``build_loader`` (loader.py) and its parts.

- sampling.py: ViCLIP frame indices (train: a random frame per segment; eval: the middle).
- transforms.py: RandomResizedCrop + flip / resize + centre crop, CLIP or ImageNet statistics.
- decoders/: pyav (default), decord, torchcodec behind one ``Decoder`` protocol.
- stream.py: the webdataset pipeline run in each loader worker; split.py: exact sharding over
  DDP ranks x workers; stats.py: skipped-sample counters.
- cache.py: decode-once memory-mapped frame cache for small corpora (``cache=PATH``).
- dali.py: the DALI pipeline (GPU decode with ``device="mixed"``).
"""
