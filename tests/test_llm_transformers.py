"""The transformers adapter on a tiny GPT-2 with random weights and a tokenizer trained here."""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the [llm] extra (torch, transformers) is not installed")
pytest.importorskip("transformers")

from agent_client.llm.batched import BatchedModel  # noqa: E402
from agent_client.llm.hf import TransformersAgent, TransformersModel, common_prefix_length  # noqa: E402
from benchmarks.llm import build_random_gpt2  # noqa: E402
from tests.helpers import MarketRun, read_ledger, run_cli, static_agent  # noqa: E402

CORPUS = [
    "Mechanism Design for Large Language Models",
    "Vacations in Hawaii with Alpha Airlines",
    "Stay at Beta Resort by the beach",
    "Generative AI agents bid for tokens",
] * 20


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-gpt2")
    return build_random_gpt2(directory, CORPUS, vocabulary=200, n_layer=2, n_embd=32, n_head=2, positions=512)


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


@pytest.mark.parametrize("lookahead", ["false", "true"])
def test_a_transformers_agent_bids_in_a_live_market(
    tiny_model_dir: Path, market_run: MarketRun, lookahead: str
) -> None:
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
        "--param",
        f"lookahead={lookahead}",
        "--param",
        "threads=1",
    )
    market_run.agent("other", *static_agent(" Hawaii=1", 1))
    assert market_run.wait(120) == [0, 0, 0], market_run.logs()
    rounds = read_ledger(market_run.db)["rounds"]
    assert all(len(r["bids"]["gpt"]["distribution"]) <= 10 for r in rounds)


def held_ids(model: TransformersModel) -> list[list[int]]:
    """The ids of every text the model holds a cache for, most recently used last."""
    return [entry.ids for entry in model._cached]


def test_the_cache_gives_the_full_recomputation_over_a_200_token_market(tiny_model_dir: Path) -> None:
    model = TransformersModel(str(tiny_model_dir), top_k=20)
    text, worst, fed = "Vacations in", 0.0, []
    for _ in range(200):
        before = len(held_ids(model)[-1]) if model._cached else 0
        cached = torch.softmax(model.next_token_logits(text), dim=-1)
        fed.append(len(held_ids(model)[-1]) - before)
        full = torch.softmax(model.full_logits(text), dim=-1)
        worst = max(worst, float((cached - full).abs().max()))
        distribution = model.next_token_distribution(text)
        text += max(distribution, key=distribution.__getitem__)  # the market's greedy draw
    assert worst < 1e-5
    assert len(model.token_ids(text)) >= 200 and len(held_ids(model)) == 1
    assert sum(fed[1:]) / len(fed[1:]) < 3  # a few ids per round after the first, not the whole text


def test_a_seam_the_tokenizer_merges_differently_is_recomputed_exactly(tiny_model_dir: Path) -> None:
    model = TransformersModel(str(tiny_model_dir))
    first, second = "Vacations in Haw", "Vacations in Hawaii"
    ids_first, ids_second = model.token_ids(first), model.token_ids(second)
    assert ids_second[: len(ids_first)] != ids_first  # " Haw" + "aii" is not " Haw" then more ids
    model.next_token_logits(first)
    cached = model.next_token_logits(second)
    assert held_ids(model) == [ids_second]  # the one cache, cropped at the seam and extended
    assert torch.allclose(torch.softmax(cached, -1), torch.softmax(model.full_logits(second), -1), atol=1e-6)


TEXTS = ["", " ", "Vacations in Hawaii", "Mechanism  Design\n\tfor", "héllo wörld ✈", "a" * 300, " ".join(CORPUS[:4])]


@pytest.mark.parametrize("text", TEXTS)
def test_token_ids_are_the_tokenizers_own(tiny_model_dir: Path, text: str) -> None:
    model = TransformersModel(str(tiny_model_dir))
    assert model.token_ids(text) == (model.tokenizer(text).input_ids or [model.tokenizer.bos_token_id])


def test_a_tokenizer_set_up_to_truncate_is_asked_the_usual_way(tiny_model_dir: Path) -> None:
    """Ids straight from the fast backend would be cut at its truncation length; the call would not."""
    model = TransformersModel(str(tiny_model_dir))
    model.tokenizer.backend_tokenizer.enable_truncation(4)
    try:
        truncating = TransformersModel(model.model, model.tokenizer)
        text = " ".join(CORPUS[:2])
        assert truncating.token_ids(text) == model.tokenizer(text).input_ids
        assert len(truncating.token_ids(text)) > 4
    finally:
        model.tokenizer.backend_tokenizer.no_truncation()


def test_common_prefix_length() -> None:
    assert common_prefix_length([1, 2, 3], [1, 2, 3, 4]) == 3
    assert common_prefix_length([1, 2, 3], [1, 5, 3]) == 1
    assert common_prefix_length([], [1]) == 0
    assert common_prefix_length([7], [8]) == 0


def test_texts_of_several_markets_keep_their_own_caches(tiny_model_dir: Path) -> None:
    model = TransformersModel(str(tiny_model_dir), cached_texts=2)
    hawaii, resort, agents = "Vacations in Hawaii", "Stay at Beta Resort", "Generative AI agents"
    for text in (hawaii, resort, hawaii + " with", resort + " by"):
        assert torch.allclose(model.next_token_logits(text), model.full_logits(text), atol=1e-4)
    assert held_ids(model) == [model.token_ids(hawaii + " with"), model.token_ids(resort + " by")]
    model.next_token_logits(agents)  # a third text evicts the least recently used
    assert held_ids(model) == [model.token_ids(resort + " by"), model.token_ids(agents)]


def greedy_token(distribution: dict[str, float]) -> str:
    return max(distribution, key=distribution.__getitem__)


def test_lookahead_has_the_next_round_ready_when_the_guess_wins(tiny_model_dir: Path) -> None:
    ahead = TransformersModel(str(tiny_model_dir), top_k=20, lookahead=True)
    plain = TransformersModel(str(tiny_model_dir), top_k=20)
    tokenised_by_calls = []  # texts the calls themselves tokenised (the guess's thread tokenises its own)
    tokenise = ahead._ids_of

    def counted(text: str) -> list[int]:
        if threading.current_thread() is threading.main_thread():
            tokenised_by_calls.append(text)
        return tokenise(text)

    ahead._ids_of = counted
    text, hits = "Vacations in", 0
    for _ in range(60):
        ahead.wait_for_lookahead()  # the guess ran while the (here absent) market decided
        passes = ahead.forward_passes
        distribution = ahead.next_token_distribution(text)
        ahead.wait_for_lookahead()  # counted once the next guess has run too, whenever it ran
        hits += ahead.forward_passes - passes == 1  # that guess's pass, none of the call's own
        expected = plain.next_token_distribution(text)
        assert distribution.keys() == expected.keys()
        assert max(abs(distribution[t] - expected[t]) for t in expected) < 1e-5
        text += greedy_token(distribution)
    assert hits >= 55  # the greedy draw is the guess; a seam the tokenizer merges differently misses
    ahead.wait_for_lookahead()
    assert (ahead.lookahead_guesses, ahead.lookahead_hits) == (60, hits)
    # A round whose text the guess made was tokenised ahead: only the first, and texts no guess made, here.
    assert tokenised_by_calls[0] == "Vacations in" and len(tokenised_by_calls) <= 1 + 60 - hits


def test_lookahead_that_guessed_wrong_is_cropped_and_exact(tiny_model_dir: Path) -> None:
    model = TransformersModel(str(tiny_model_dir), top_k=20, lookahead=True)
    distribution = model.next_token_distribution("Vacations in")
    model.wait_for_lookahead()
    other = sorted(distribution, key=distribution.__getitem__)[0]  # the least likely: not the guess
    assert other != greedy_token(distribution)
    passes = model.forward_passes
    text = "Vacations in" + other
    logits = model.next_token_logits(text)
    assert model.forward_passes == passes + 1 and held_ids(model) == [model.token_ids(text)]
    assert (model.lookahead_guesses, model.lookahead_hits) == (1, 0)
    assert torch.allclose(torch.softmax(logits, -1), torch.softmax(model.full_logits(text), -1), atol=1e-6)


def test_lookahead_is_for_an_agent_with_a_model_of_its_own(tiny_model_dir: Path) -> None:
    base = TransformersModel(str(tiny_model_dir))
    assert TransformersAgent(base, lookahead=True).model.lookahead and not base.lookahead
    with pytest.raises(ValueError, match="lookahead"):
        TransformersAgent(BatchedModel(base), lookahead=True)


def test_threads_sets_torchs_pool_for_the_process(tiny_model_dir: Path) -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        TransformersAgent(str(tiny_model_dir), threads=1)
        assert torch.get_num_threads() == 1
        TransformersModel(str(tiny_model_dir), threads=2)
        assert torch.get_num_threads() == 2
        TransformersModel(str(tiny_model_dir))  # None: left as it is
        assert torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="threads"):
            TransformersAgent(str(tiny_model_dir), threads=0)
    finally:
        torch.set_num_threads(before)


def test_agents_share_one_loaded_model_with_their_own_caches(tiny_model_dir: Path) -> None:
    base = TransformersModel(str(tiny_model_dir), top_k=10)
    alpha = TransformersAgent(base, instruction="Alpha Airlines. ", top_k=5)
    beta = TransformersAgent(base, instruction="Beta Resort. ")
    assert alpha.model.model is base.model is beta.model.model  # the weights, loaded once
    a = alpha.model.next_token_distribution("Alpha Airlines. Vacations in")
    b = beta.model.next_token_distribution("Beta Resort. Vacations in")
    assert len(a) <= 5 and a == TransformersModel(str(tiny_model_dir), top_k=5).next_token_distribution(
        "Alpha Airlines. Vacations in"
    )
    assert b != a and held_ids(alpha.model) != held_ids(beta.model)


def test_batched_members_get_what_each_would_get_alone(tiny_model_dir: Path) -> None:
    batched = BatchedModel(TransformersModel(str(tiny_model_dir)), window=0.5)
    briefs = ["Alpha Airlines. ", "Stay at Beta Resort by the beach. ", ""]
    members = [batched.member() for _ in briefs]
    texts = [brief + "Vacations in" for brief in briefs]
    worst = 0.0
    with ThreadPoolExecutor(len(members)) as pool:  # as the runtime runs each agent's decide
        for _ in range(12):
            logits = list(pool.map(lambda mt: mt[0].next_token_logits(mt[1]), zip(members, texts, strict=True)))
            for member, text, got in zip(members, texts, logits, strict=True):
                worst = max(
                    worst, float((torch.softmax(got, -1) - torch.softmax(member.full_logits(text), -1)).abs().max())
                )
            texts = [
                text + max(m.next_token_distribution(text).items(), key=lambda kv: kv[1])[0]
                for m, text in zip(members, texts, strict=True)
            ]
    assert worst < 1e-5
    assert (batched.rows, batched.batches) == (3 * 12, 12)  # one forward pass per round for the three


def test_agents_sharing_one_model_trade_in_one_process(tiny_model_dir: Path, market_run: MarketRun) -> None:
    market_run.serve("--min-agents", "4", "--max-tokens", "4", "--prompt", "Vacations in", "--round-timeout", "20")
    command = [sys.executable, "-m", "examples.shared_model", "--market", market_run.market, "--feed", market_run.feed]
    shared = subprocess.run([*command, "--model", str(tiny_model_dir)], capture_output=True, text=True, timeout=180)
    assert shared.returncode == 0, shared.stderr[-3000:]
    rounds = read_ledger(market_run.db)["rounds"]
    assert len(rounds) == 4 and all(set(r["bids"]) == {"alpha", "beta", "gamma", "delta"} for r in rounds)
    assert shared.stdout.count("verification failures 0") == 4
    calls, passes = (int(word) for word in shared.stdout.splitlines()[-1].split() if word.isdigit())
    assert calls >= 16 and passes < calls  # the four agents' rounds shared forward passes


def test_a_model_that_cannot_be_loaded_is_one_line(tmp_path: Path) -> None:
    agent = ["--agent", "agent_client.llm.hf:TransformersAgent", "--param", f"model={tmp_path / 'missing'}"]
    result = run_cli("-m", "agent_client", "--name", "a", *agent)
    assert result.returncode == 2 and "cannot build agent_client.llm.hf:TransformersAgent: " in result.stderr
    assert "Traceback" not in result.stderr
