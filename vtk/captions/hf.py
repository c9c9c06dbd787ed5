"""``hf:<hub-id-or-local-path>``: transformers models as captioners and summarisers.

- ``HFCaptioner``: any image-to-text model that ``AutoModelForImageTextToText`` loads (BLIP,
  BLIP-2, GIT, ...), batched, half precision on a GPU. The paper's coarse captioner is
  ``hf:Salesforce/blip2-opt-2.7b``.
- ``HFSummarizer``: any text-generation (decoder-only) or text2text (encoder-decoder) model,
  prompted with the timed frame captions.

A hub id needs the network or a filled Hugging Face cache; a local folder needs only itself.
Without the network (``HF_HUB_OFFLINE``, or the hub's host not answering) a hub id that is not
in the cache is refused in seconds (``check_hub``), not after minutes of retries.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import numpy as np

from vtk.captions.base import check_frames
from vtk.errors import VtkError, install_hint

HINT = install_hint("transformers", package="'transformers>=4.45' torch")
PROMPT = ("Summarize these video frame captions into one sentence that describes what happens "
          "in the video.\n{lines}\nSummary:")


def _transformers():
    try:
        import torch
        import transformers
    except ImportError as e:
        raise VtkError(f"hf: models need transformers and torch ({e}); install them with: "
                       f"{HINT}") from None
    return transformers, torch


PROXIES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


@functools.cache
def hub_offline() -> str | None:
    """Why the Hugging Face hub cannot be reached now: ``HF_HUB_OFFLINE`` (or
    ``TRANSFORMERS_OFFLINE``) set, or its host (``HF_ENDPOINT``) not taking a connection within
    3 s; None when it does, or when a proxy stands between (the hub client then decides). A
    process that finds it unreachable puts huggingface_hub in offline mode: a model in the
    cache then loads at once instead of after the client's retries."""
    import socket
    from urllib.parse import urlsplit

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return f"{var}={os.environ[var]}"
    if any(os.environ.get(v) for v in PROXIES):
        return None
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https"
                                                             else 80)), timeout=3).close()
    except OSError as e:
        try:
            from huggingface_hub import constants
        except ImportError:
            pass
        else:
            constants.HF_HUB_OFFLINE = True
        return f"{url.hostname} unreachable: {e.strerror or e}"
    return None


def check_hub(name: str) -> None:
    """``hf:ID`` or ``vlm:ID`` can load now: a local folder, a hub id already in the Hugging
    Face cache, or any id while the hub answers; otherwise a VtkError line, in seconds."""
    prefix, _, path = name.partition(":")
    if not path or os.path.isdir(os.path.expanduser(path)):
        return
    reason = hub_offline()
    if reason is None:
        return
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(path, "config.json")
    except Exception:  # noqa: BLE001 - not a valid repo id (a missing local path): not cached
        cached = None
    if isinstance(cached, str):
        return
    raise VtkError(f"{name}: cannot load it: not a local folder, not in the Hugging Face "
                   f"cache, and the hub cannot be reached ({reason}); pass a local model folder "
                   f"({prefix}:/path/to/model) or run where the hub is reachable")


def _load(what: str, path: str, loader):
    check_hub(f"hf:{path}")
    try:
        return loader()
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VtkError(f"hf:{path}: cannot load the {what} ({first}); pass a local model folder "
                       "or a hub id that is reachable or already in the Hugging Face cache"
                       ) from None


def _dtype(device: str):
    _, torch = _transformers()
    return torch.float16 if device.startswith("cuda") else torch.float32


def _new_tokens(out, inputs) -> object:
    """Drop the prompt from generate()'s output when a decoder-only model echoes it."""
    ids = inputs.get("input_ids") if hasattr(inputs, "get") else None
    if ids is not None and out.shape[1] >= ids.shape[1] and bool((out[:, :ids.shape[1]] == ids)
                                                                 .all()):
        return out[:, ids.shape[1]:]
    return out


class HFCaptioner:
    def __init__(self, path: str, device: str = "cpu", max_new_tokens: int = 30,
                 prompt: str | None = None):
        transformers, _ = _transformers()
        self.name = f"hf:{path}"
        self.device = device
        self.processor = _load("processor", path,
                               lambda: transformers.AutoProcessor.from_pretrained(path))
        # transformers 5 loads BLIP, BLIP-2 and GIT with AutoModelForImageTextToText; older
        # releases named the same mapping AutoModelForVision2Seq
        auto = (getattr(transformers, "AutoModelForImageTextToText", None)
                or transformers.AutoModelForVision2Seq)
        self.model = _load("image-to-text model", path,
                           lambda: auto.from_pretrained(path, dtype=_dtype(device)))
        self.model.eval().to(device)
        self.max_new_tokens = max_new_tokens
        self.prompt = prompt

    def caption(self, frames: np.ndarray) -> list[str]:
        _, torch = _transformers()
        images = list(check_frames(frames))
        kwargs = {"images": images, "return_tensors": "pt"}
        if self.prompt is not None:
            kwargs["text"] = [self.prompt] * len(images)
        inputs = self.processor(**kwargs).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                      do_sample=False)
        texts = self.processor.batch_decode(_new_tokens(out, inputs), skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]


class HFSummarizer:
    def __init__(self, path: str, device: str = "cpu", max_new_tokens: int = 40):
        transformers, _ = _transformers()
        self.name = f"hf:{path}"
        self.device = device
        self.tokenizer = _load("tokenizer", path,
                               lambda: transformers.AutoTokenizer.from_pretrained(path))
        config = _load("config", path, lambda: transformers.AutoConfig.from_pretrained(path))
        self.seq2seq = bool(getattr(config, "is_encoder_decoder", False))
        auto = (transformers.AutoModelForSeq2SeqLM if self.seq2seq
                else transformers.AutoModelForCausalLM)
        self.model = _load("text model", path,
                           lambda: auto.from_pretrained(path, dtype=_dtype(device)))
        self.model.eval().to(device)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        # decoder-only models continue the prompt, so pad on the left
        self.tokenizer.padding_side = "right" if self.seq2seq else "left"
        self.max_new_tokens = max_new_tokens

    def prompt(self, texts: Sequence[str], times: Sequence[float]) -> str:
        lines = "\n".join(f"{t:.1f}s: {x}" for t, x in zip(times, texts))
        return PROMPT.format(lines=lines)

    def summarize(self, texts, times, objects=None) -> str:
        return self.summarize_batch([(texts, times, objects)])[0]

    def summarize_batch(self, jobs) -> list[str]:
        """Many clips' (texts, times, objects) in one generate call."""
        _, torch = _transformers()
        limit = getattr(self.tokenizer, "model_max_length", None)
        limit = limit if limit and limit < 100_000 else 1024  # "no limit" is a huge number
        prompts = [self.prompt(texts, times) for texts, times, *_ in jobs]
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, truncation=True,
                                max_length=limit).to(self.device)
        inputs.pop("token_type_ids", None)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                      min_new_tokens=1, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
        if not self.seq2seq:  # left padding: every prompt ends where the new tokens start
            out = out[:, inputs["input_ids"].shape[1]:]
        return [" ".join(t.split()) for t in
                self.tokenizer.batch_decode(out, skip_special_tokens=True)]
