"""Near-duplicate search: exact, blocked all-pairs comparison, then connected groups.

Both searches are exact (every pair is compared) and blocked (a B x N slab at a time), so
memory stays at B x N whatever N is:

- ``frame_pairs``: mean Hamming distance of the clips' frame hashes (``vtk.curate.hashes``),
  numpy XOR and popcount;
- ``embed_pairs``: cosine of L2-normalised clip embeddings, a torch matmul per block, on the
  GPU when one is given.

Why not faiss: an exact search needs no index to train or tune and no new dependency, and at
the sizes a vtk user scores on one machine (1e5-1e6 clips) it is minutes; faiss-cpu's flat
index does the same arithmetic. The cost at 10M clips, on paper (docs/curation.md): N^2/2 =
5e13 pairs; embeddings at D = 512 are 5e16 multiply-adds, about 14 h at 1 TFLOP/s of CPU and
under 10 min at 100 TFLOP/s of one GPU in fp16; hashes are 5e13 x K popcounts, some 15 h on a
core. Past that, a candidate step first (faiss IVF or k-means clusters as SemDeDup does,
exact-band buckets for hashes) makes it near-linear; the pair tests here stay the same.
"""

from __future__ import annotations

import numpy as np

from vtk.curate.hashes import sum_hamming


def frame_pairs(hashes: np.ndarray, threshold: float, block: int = 1024):
    """(i, j, mean Hamming) for every i < j within ``threshold``; ``hashes`` N x K uint64."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    n, k = hashes.shape if hashes.ndim == 2 else (len(hashes), 1)
    out = []
    for s in range(0, n, block):
        d = sum_hamming(hashes[s:s + block], hashes)
        ii, jj = np.nonzero(d <= threshold * k)
        for i, j in zip(ii.tolist(), jj.tolist()):
            if s + i < j:
                out.append((s + i, j, float(d[i, j]) / k))
    return out


def embed_pairs(emb: np.ndarray, threshold: float, block: int = 4096, device: str = "cpu"):
    """(i, j, cosine) for every i < j with cosine >= ``threshold``; ``emb`` N x D."""
    import torch

    x = torch.as_tensor(np.asarray(emb, dtype=np.float32), device=device)
    x = torch.nn.functional.normalize(x, dim=1)
    if device != "cpu":
        x = x.half()
    n = x.shape[0]
    out = []
    for s in range(0, n, block):
        sims = (x[s:s + block] @ x.T).float()
        ii, jj = torch.nonzero(sims >= threshold, as_tuple=True)
        for i, j in zip(ii.tolist(), jj.tolist()):
            if s + i < j:
                out.append((s + i, j, float(sims[i, j])))
    return out


def groups(n: int, pairs) -> list[list[int]]:
    """Connected components of ``pairs`` over ``n`` items: the groups of two or more, each
    sorted, in order of their first member (union-find with path halving)."""
    parent = list(range(n))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j, *_ in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(find(i), []).append(i)
    return sorted((m for m in members.values() if len(m) > 1), key=lambda m: m[0])


def keep_one(group: list[int], pixels, nbytes) -> int:
    """The copy a group keeps: the most pixels, then the most bytes (the higher bitrate),
    then the first in set order. A re-upload at a lower size or bitrate is what goes."""
    return max(group, key=lambda i: (int(pixels[i]), int(nbytes[i]), -i))
