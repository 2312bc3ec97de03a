"""Several advertisers' LLM agents in one process, sharing one loaded model (each with its own
instruction, bid and key/value caches; each round's forward passes run as one batch):

    python -m examples.shared_model --market tcp://127.0.0.1:5555 --feed tcp://127.0.0.1:5556 --model gpt2
"""

from __future__ import annotations

import argparse
import asyncio

from agent_client.llm.batched import BatchedModel
from agent_client.llm.hf import TransformersAgent, TransformersModel
from agent_client.swarm import run_agents

ADVERTISERS = {
    "alpha": ("Fly with Alpha Airlines. ", 2.0),
    "beta": ("Stay at Beta Resort by the beach. ", 1.5),
    "gamma": ("Rent a car from Gamma Cars. ", 1.0),
    "delta": ("Eat at Delta Diner. ", 0.5),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--market", required=True)
    parser.add_argument("--feed", required=True)
    parser.add_argument("--model", required=True, help="a hub name or a save_pretrained directory")
    parser.add_argument("--top-k", type=int, default=20)
    args = parser.parse_args()
    base = BatchedModel(TransformersModel(args.model, top_k=args.top_k))  # the weights, loaded once
    agents = {
        name: TransformersAgent(base, bid=bid, instruction=instruction, top_k=args.top_k)
        for name, (instruction, bid) in ADVERTISERS.items()
    }
    reports = asyncio.run(run_agents(agents, args.market, args.feed))
    for report in reports:
        print(f"{report.name}: spent {report.spent:.3f}, verification failures {report.verification_failures}")
    print(f"{base.rows} model calls in {base.batches} forward passes")


if __name__ == "__main__":
    main()
