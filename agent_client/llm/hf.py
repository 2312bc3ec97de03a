"""Hugging Face ``transformers`` causal LMs as next-token models (extra ``[llm]``: torch, transformers).

Any causal LM by hub name or local path (``TransformersAgent(model="gpt2")`` or a directory written
by ``save_pretrained``). The distribution is the softmax of the last position's logits over decoded
token strings, shaped by temperature, top-k and top-p (:func:`shape_distribution`).
"""

from __future__ import annotations

from typing import Any

from agent_client.llm.agent import LLMAgent, shape_distribution


class TransformersModel:
    """A local causal LM; ``model`` is a name, a path, or an already loaded model (then pass ``tokenizer``)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        temperature: float = 1.0,
        top_k: int | None = 50,
        top_p: float | None = None,
        device: str = "cpu",
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if isinstance(model, str):
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
            model = AutoModelForCausalLM.from_pretrained(model)
        if tokenizer is None:
            raise ValueError("pass the tokenizer along with a loaded model")
        self.torch = torch
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p

    def next_token_distribution(self, text: str) -> dict[str, float]:
        ids = self.tokenizer(text, return_tensors="pt").input_ids.to(self.device)
        if ids.shape[1] == 0:
            start = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else 0
            ids = self.torch.tensor([[start]], device=self.device)
        with self.torch.no_grad():
            logits = self.model(ids).logits[0, -1].float()
        logprobs = self.torch.log_softmax(logits, dim=-1)
        k = min(self.top_k or logprobs.shape[0], logprobs.shape[0])
        top = self.torch.topk(logprobs, k)
        pairs = [
            (self.tokenizer.decode([token_id]), float(logprob))
            for token_id, logprob in zip(top.indices.tolist(), top.values.tolist(), strict=True)
        ]
        return shape_distribution(pairs, self.temperature, self.top_k, self.top_p)


class TransformersAgent(LLMAgent):
    """``--agent agent_client.llm.hf:TransformersAgent --param model=gpt2 --param bid=1``."""

    def __init__(
        self,
        model: str,
        bid: float = 1.0,
        instruction: str = "",
        temperature: float = 1.0,
        top_k: int | None = 50,
        top_p: float | None = None,
    ) -> None:
        super().__init__(TransformersModel(model, None, temperature, top_k, top_p), bid, instruction)
