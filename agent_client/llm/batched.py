"""One loaded model serving several agents in one process, their rounds batched into one forward pass.

Agents that share a base model (advertisers with their own instructions, say) each get a
:meth:`BatchedModel.member`: a :class:`~agent_client.llm.hf.TransformersModel` with its own caches
whose forward passes go to the batcher. The runtime calls each agent's ``decide`` in its own worker
thread; the batcher takes the requests that arrive together (until every member has asked, or
``window`` seconds after the first) and runs them as one batch: each row's cache left-padded to the
longest, its new ids right-padded, an attention mask over the padding and explicit positions, so
every row's logits are what it would get alone (to float rounding; the tests check 1e-5).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from agent_client.llm.hf import CachedText, TransformersModel

log = logging.getLogger(__name__)


@dataclass
class Extension:
    """One member's request: extend ``entry`` (holding ``ids[:keep]``) to all of ``ids``."""

    entry: CachedText
    ids: list[int]
    keep: int
    done: Future[None]


def layer_tensors(cache: Any, layer: int) -> tuple[Any, Any]:
    """The keys and values a ``DynamicCache`` holds for ``layer`` (either transformers layout)."""
    if hasattr(cache, "layers"):
        return cache.layers[layer].keys, cache.layers[layer].values
    return cache.key_cache[layer], cache.value_cache[layer]


class BatchedModel:
    """A loaded :class:`TransformersModel` whose members' forward passes run batched."""

    def __init__(self, model: TransformersModel, window: float = 0.005) -> None:
        self.model = model
        self.window = window
        self.members = 0
        self.batches = 0  # forward passes run
        self.rows = 0  # member requests they served
        self._requests: queue.SimpleQueue[Extension] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def member(self, **shaping: Any) -> TransformersModel:
        """A model for one more agent: shared weights, its own caches; ``shaping`` as :meth:`fork`."""
        self.members += 1
        return _Member(self, shaping)

    def extend(self, entry: CachedText, ids: list[int], keep: int) -> None:
        """Queue one member's extension and wait for the batch that serves it."""
        with self._start_lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve, name="llm-batcher", daemon=True)
                self._worker.start()
        done: Future[None] = Future()
        self._requests.put(Extension(entry, ids, keep, done))
        done.result()

    def _serve(self) -> None:
        while True:
            batch = [self._requests.get()]
            deadline = time.monotonic() + self.window
            while len(batch) < self.members:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    batch.append(self._requests.get(timeout=left))
                except queue.Empty:
                    break
            try:
                self._forward(batch)
            except Exception as exc:
                log.exception("a batched forward pass failed")
                for request in batch:
                    request.done.set_exception(exc)
            else:
                for request in batch:
                    request.done.set_result(None)

    def _forward(self, batch: list[Extension]) -> None:
        from transformers import DynamicCache

        torch, model = self.model.torch, self.model.model
        past = max(request.keep for request in batch)
        width = max(len(request.ids) - request.keep for request in batch)
        rows = len(batch)
        input_ids = torch.zeros(rows, width, dtype=torch.long)
        mask = torch.zeros(rows, past + width, dtype=torch.long)
        positions = torch.zeros(rows, width, dtype=torch.long)
        for row, request in enumerate(batch):
            fresh = request.ids[request.keep :]
            input_ids[row, : len(fresh)] = torch.tensor(fresh)
            mask[row, past - request.keep : past + len(fresh)] = 1
            positions[row] = request.keep + torch.arange(width)
        cache = DynamicCache()
        if past:
            cached = next(request for request in batch if request.keep)
            for layer in range(model.config.num_hidden_layers):
                like = layer_tensors(cached.entry.cache, layer)[0]
                keys, values = zip(*(self._padded(request, layer, past, like) for request in batch), strict=True)
                cache.update(torch.cat(keys), torch.cat(values), layer)
        device = self.model.device
        with torch.inference_mode():
            output = model(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                use_cache=True,
                **{self.model._cache_argument: cache},
            )
        for row, request in enumerate(batch):
            added = len(request.ids) - request.keep
            own = DynamicCache()
            for layer in range(model.config.num_hidden_layers):
                keys, values = layer_tensors(cache, layer)
                span = slice(past - request.keep, past + added)
                own.update(keys[row : row + 1, :, span].clone(), values[row : row + 1, :, span].clone(), layer)
            request.entry.cache, request.entry.ids = own, request.ids
            request.entry.logits = output.logits[row, added - 1].float()
        self.batches += 1
        self.rows += rows

    def _padded(self, request: Extension, layer: int, past: int, like: Any) -> tuple[Any, Any]:
        """The request's cached keys and values for ``layer``, left-padded to ``past`` positions (a
        request with nothing cached gets all padding, shaped like ``like``)."""
        torch = self.model.torch
        if request.keep:
            keys, values = layer_tensors(request.entry.cache, layer)
        else:
            keys = values = torch.zeros_like(like[:1, :, :0])
        pad = (0, 0, past - request.keep, 0)
        return torch.nn.functional.pad(keys, pad), torch.nn.functional.pad(values, pad)


class _Member(TransformersModel):
    """A member of a :class:`BatchedModel`: its own caches, its forward passes batched."""

    def __init__(self, batcher: BatchedModel, shaping: dict[str, Any]) -> None:
        base = batcher.model
        settings = {"temperature": base.temperature, "top_k": base.top_k, "top_p": base.top_p, **shaping}
        super().__init__(base.model, base.tokenizer, device=base.device, cached_texts=base.cached_texts, **settings)
        self.batcher = batcher

    def _extend(self, entry: CachedText, ids: list[int], keep: int) -> None:
        self.batcher.extend(entry, ids, keep)
