"""The OpenAI-compatible adapter against a small local server speaking that API, and in a market."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from agent_client import RoundContext
from agent_client.llm import shape_distribution
from agent_client.llm.http import OpenAICompatibleAgent, OpenAICompatibleModel
from tests.helpers import MarketRun, read_ledger, static_agent

NEXT = {" Language": math.log(0.6), " Vision": math.log(0.3), " Models": math.log(0.1)}


class CompletionsHandler(BaseHTTPRequestHandler):
    """Answers /v1/completions like llama.cpp / vLLM: one token with its top logprobs."""

    requests: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        CompletionsHandler.requests.append(body)
        top = dict(sorted(NEXT.items(), key=lambda kv: -kv[1])[: body["logprobs"]])
        chat = body["prompt"].startswith("[chat]")
        logprobs: dict[str, Any] = (
            {
                "content": [
                    {
                        "token": " Language",
                        "logprob": NEXT[" Language"],
                        "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top.items()],
                    }
                ]
            }
            if chat
            else {"tokens": [" Language"], "token_logprobs": [NEXT[" Language"]], "top_logprobs": [top]}
        )
        payload = json.dumps({"choices": [{"text": " Language", "logprobs": logprobs}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), CompletionsHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_reads_top_logprobs_and_shapes_them(server: str) -> None:
    model = OpenAICompatibleModel(server, "tiny", top_k=3)
    assert model.next_token_distribution("Large") == pytest.approx({" Language": 0.6, " Vision": 0.3, " Models": 0.1})
    assert CompletionsHandler.requests[-1] == {
        "model": "tiny",
        "prompt": "Large",
        "max_tokens": 1,
        "logprobs": 3,
        "temperature": 0.0,
    }
    assert OpenAICompatibleModel(server, "tiny", top_k=2).next_token_distribution("[chat] x") == pytest.approx(
        {" Language": 2 / 3, " Vision": 1 / 3}
    )


def test_shaping_temperature_top_k_top_p_and_merging() -> None:
    logprobs = {"a": math.log(0.5), "b": math.log(0.3), "c": math.log(0.2), "": 0.0}
    assert shape_distribution(logprobs) == pytest.approx({"a": 0.5, "b": 0.3, "c": 0.2})
    assert shape_distribution(logprobs, top_k=2) == pytest.approx({"a": 0.625, "b": 0.375})
    assert shape_distribution(logprobs, top_p=0.75) == pytest.approx({"a": 0.625, "b": 0.375})
    sharp = shape_distribution(logprobs, temperature=0.5)
    assert sharp["a"] == pytest.approx(0.25 / (0.25 + 0.09 + 0.04))


def test_instruction_steers_and_unreachable_servers_skip_the_round(server: str) -> None:
    agent = OpenAICompatibleAgent(server, "tiny", bid=2.0, instruction="Advertise Alpha Airlines. ")
    context = RoundContext(name="a", round=1, prompt="P", text="P", tokens=(), budget=None, spent=0.0, timeout=1.0)
    bid = agent.decide(context)
    assert bid is not None and bid.amount == 2.0
    assert CompletionsHandler.requests[-1]["prompt"] == "Advertise Alpha Airlines. P"
    offline = OpenAICompatibleAgent("http://127.0.0.1:9/v1", "tiny")
    assert offline.decide(context) is None


def test_an_llm_agent_bids_in_a_live_market(server: str, market_run: MarketRun) -> None:
    market_run.serve("--min-agents", "2", "--max-tokens", "2", "--prompt", "Large")
    market_run.agent(
        "llm",
        "--agent",
        "agent_client.llm.http:OpenAICompatibleAgent",
        "--param",
        f"base_url={server}",
        "--param",
        "model=tiny",
        "--param",
        "bid=3",
    )
    market_run.agent("other", *static_agent(" Vision=1", 1))
    assert market_run.wait(60) == [0, 0, 0], market_run.logs()
    first = read_ledger(market_run.db)["rounds"][0]
    assert first["bids"]["llm"]["distribution"] == pytest.approx({" Language": 0.6, " Vision": 0.3, " Models": 0.1})
