"""The transformers adapter on a tiny GPT-2 with random weights and a tokenizer trained here."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the [llm] extra (torch, transformers) is not installed")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from agent_client.llm.hf import TransformersModel  # noqa: E402
from tests.helpers import MarketRun, read_ledger, static_agent  # noqa: E402

CORPUS = [
    "Mechanism Design for Large Language Models",
    "Vacations in Hawaii with Alpha Airlines",
    "Stay at Beta Resort by the beach",
    "Generative AI agents bid for tokens",
] * 20


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=200, special_tokens=["<|endoftext|>"])
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    tokenizer.train_from_iterator(CORPUS, trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=fast.vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    model = transformers.GPT2LMHeadModel(config)
    directory = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


def test_distribution_over_decoded_tokens(tiny_model_dir: Path) -> None:
    model = TransformersModel(str(tiny_model_dir), top_k=20)
    distribution = model.next_token_distribution("Mechanism Design for")
    assert 0 < len(distribution) <= 20
    assert sum(distribution.values()) == pytest.approx(1.0)
    assert all(isinstance(t, str) and t for t in distribution)
    assert model.next_token_distribution("") and model.next_token_distribution("Mechanism") != distribution


def test_temperature_and_top_p_shape_it(tiny_model_dir: Path) -> None:
    warm = TransformersModel(str(tiny_model_dir), top_k=30, temperature=2.0).next_token_distribution("Vacations in")
    cold = TransformersModel(str(tiny_model_dir), top_k=30, temperature=0.2).next_token_distribution("Vacations in")
    assert max(cold.values()) > max(warm.values())
    nucleus = TransformersModel(str(tiny_model_dir), top_k=30, top_p=0.3).next_token_distribution("Vacations in")
    assert len(nucleus) < 30


def test_a_transformers_agent_bids_in_a_live_market(tiny_model_dir: Path, market_run: MarketRun) -> None:
    market_run.serve("--min-agents", "2", "--max-tokens", "3", "--prompt", "Vacations in", "--round-timeout", "20")
    market_run.agent(
        "gpt",
        "--agent",
        "agent_client.llm.hf:TransformersAgent",
        "--param",
        f"model={tiny_model_dir}",
        "--param",
        "bid=2",
        "--param",
        "top_k=10",
    )
    market_run.agent("other", *static_agent(" Hawaii=1", 1))
    assert market_run.wait(120) == [0, 0, 0], market_run.logs()
    rounds = read_ledger(market_run.db)["rounds"]
    assert all(len(r["bids"]["gpt"]["distribution"]) <= 10 for r in rounds)
