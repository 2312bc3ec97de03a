"""The key/value cache that grows in place holds exactly what transformers' concatenating cache holds."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the [llm] extra (torch, transformers) is not installed")
transformers = pytest.importorskip("transformers")

from agent_client.llm import growing_cache  # noqa: E402
from agent_client.llm.growing_cache import HAS_LAYERS, new_cache  # noqa: E402

pytestmark = pytest.mark.skipif(not HAS_LAYERS, reason="this transformers has no per-layer cache classes")
LAYERS, HEADS, HEAD_DIM = 2, 3, 4


def states(positions: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shape = (1, HEADS, positions, HEAD_DIM)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


def test_updates_and_crops_hold_what_concatenation_holds() -> None:
    growing, concatenating = new_cache(), transformers.DynamicCache()
    assert isinstance(growing, growing_cache.GrowingCache)
    steps = [5, 1, 1, -2, 3, 1, -6, 70, 1, -1, 1]  # positions added (crops when negative), past the first room
    for seed, step in enumerate(steps):
        for cache in (growing, concatenating):
            if step < 0:
                cache.crop(step)
                continue
            for layer in range(LAYERS):
                returned = cache.update(*states(step, 10 * seed + layer), layer)
                assert returned[0].shape[-2] == cache.get_seq_length(layer)
        assert growing.get_seq_length() == concatenating.get_seq_length()
        for layer in range(LAYERS):
            assert torch.equal(growing.layers[layer].keys, concatenating.layers[layer].keys)
            assert torch.equal(growing.layers[layer].values, concatenating.layers[layer].values)
    assert growing.get_seq_length() == 74


def test_growing_a_position_at_a_time_reallocates_only_when_the_room_is_full() -> None:
    cache = new_cache()
    views = []  # each update's keys, held so that no buffer's memory is reused by the next
    for seed in range(1000):
        cache.update(*states(1, seed), 0)
        views.append(cache.layers[0].keys)
    assert cache.get_seq_length() == 1000
    buffers = {view.untyped_storage().data_ptr() for view in views}
    assert len(buffers) == 6  # half as much again as needed, plus 64: 65, 163, 310, 530, 860, 1355


def test_a_crop_below_zero_positions_is_refused() -> None:
    cache = new_cache()
    cache.update(*states(2, 0), 0)
    with pytest.raises(ValueError, match="negative"):
        cache.crop(1)
    cache.crop(-2)
    assert cache.get_seq_length() == 0
