"""A key/value cache that grows in place: each round's new keys and values are written into spare room.

transformers' ``DynamicCache`` extends each layer's keys and values by concatenation, which copies
the whole cache on every forward pass: at 400 tokens that was about 0.6 ms of a 3.8 ms round for a
4-layer model, the part of a round's cost that grew with the text. :class:`GrowingCache` keeps
each layer's keys and values in a buffer with room to spare (half as much again as it needs when
it is full, so a text of n tokens costs O(n) copying in all and at most a third of a buffer is
unused) and hands attention views of the part in use. Cropping moves the end back. The values in
the views are the very values concatenation would have made, so distributions do not change.

It needs transformers' per-layer cache classes (``transformers.cache_utils.DynamicLayer``, in its
recent releases); :func:`new_cache` falls back to a plain ``DynamicCache`` where they do not exist.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache, cache_utils

SPARE_POSITIONS = 64  # room beyond what is needed at each reallocation, besides half as much again
HAS_LAYERS = hasattr(cache_utils, "DynamicLayer")


def new_cache() -> Any:
    """An empty cache for a forward pass: a :class:`GrowingCache` where transformers allows it."""
    return GrowingCache() if HAS_LAYERS else DynamicCache()


if HAS_LAYERS:

    class GrowingLayer(cache_utils.DynamicLayer):  # type: ignore[no-untyped-call]
        """One layer's keys and values, ``[batch, heads, positions, head_dim]``, in a buffer with spare
        positions; ``keys`` and ``values`` are views of the positions in use."""

        _key_room: torch.Tensor | None = None
        _value_room: torch.Tensor | None = None
        _length = 0

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            self.device = key_states.device
            self.is_initialized = True

        def update(
            self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
        ) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            start, end = self._length, self._length + key_states.shape[-2]
            key_room = self._key_room = _with_room(self._key_room, start, end, key_states)
            value_room = self._value_room = _with_room(self._value_room, start, end, value_states)
            key_room[..., start:end, :] = key_states
            value_room[..., start:end, :] = value_states
            return self._set_length(end)

        def crop(self, tokens_to_remove: int) -> None:
            """Forget the last ``-tokens_to_remove`` positions (a negative count, as transformers asks)."""
            if tokens_to_remove > 0:
                raise ValueError(f"crop takes a negative count of positions to remove, got {tokens_to_remove}")
            if tokens_to_remove and self._key_room is not None:
                self._set_length(max(0, self._length + tokens_to_remove))

        def reset(self) -> None:
            self._key_room = self._value_room = None
            self._length = 0
            super().reset()

        def _set_length(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
            """Use the first ``length`` positions; the views of them."""
            assert self._key_room is not None and self._value_room is not None
            self._length = length
            keys, values = self._key_room[..., :length, :], self._value_room[..., :length, :]
            self.keys, self.values = keys, values
            return keys, values

    class GrowingCache(cache_utils.Cache):
        """A cache of :class:`GrowingLayer`, one per model layer, added as the model first updates it."""

        def __init__(self) -> None:
            super().__init__(layer_class_to_replicate=GrowingLayer)


def _with_room(room: torch.Tensor | None, used: int, needed: int, states: torch.Tensor) -> torch.Tensor:
    """``room`` if it holds ``needed`` positions, else a larger buffer with its first ``used`` copied."""
    if room is not None and room.shape[-2] >= needed:
        return room
    shape = (*states.shape[:-2], needed + needed // 2 + SPARE_POSITIONS, states.shape[-1])
    bigger = torch.empty(shape, dtype=states.dtype, device=states.device)
    if room is not None and used:
        bigger[..., :used, :] = room[..., :used, :]
    return bigger
