"""Hugging Face ``transformers`` causal LMs as next-token models (extra ``[llm]``: torch, transformers).

Any causal LM by name (``TransformersAgent(model="smollm2")``, the packaged instruct model), by GGUF
file, hub name or local directory (:mod:`agent_client.llm.model_files`). The distribution is the
softmax of the last position's logits over decoded token strings (special tokens left out: they
are not text), shaped by temperature, top-k and top-p (:func:`shape_distribution`).

**Framing** (:meth:`TransformersModel.frame`). An instruct model (one whose tokenizer has a chat
template) sees the agent's instruction as the system message and the market's text as the
assistant's reply so far: ``template([system: instruction]) + text``, the template's opening of
the assistant's turn included. The frame is a fixed prefix, so the distribution still continues
the market's text token by token, and the cache below still finds it. A base model sees the
instruction prepended to the text.

**The cache.** The model keeps key/value caches between calls, one per recent text (``cached_texts``,
so an agent in several markets keeps one per market). Each call tokenises the whole text, takes the
cache with the longest common prefix of token ids, crops it to that prefix and feeds only the ids
after it: round n of a market costs one token's work, not n. Because ids are compared (not
strings), a seam the tokenizer merges differently once a token is appended (``" Haw"`` + ``"aii"``
becoming ``" Hawaii"``) is recomputed exactly from the first id that changed.

**Lookahead** (``lookahead=True``). Once a distribution is computed, the model extends that text's
cache by its own most likely token in a background thread, while the agent's bid travels and the
auctioneer decides. If that token wins (always, in a greedy market that the agent leads; often,
wherever agents agree), the next round finds its logits ready: the model's work overlaps the
market's round trip instead of following it. The text the guess would make is tokenised whole in
that thread too, so that round skips tokenising as well. If another token wins, the cache is
cropped back by one id and extended as usual; the guess cost at most the part of one forward pass
still running when the next round asked. Distributions are the same either way.

**Threads** (``threads``). torch runs a forward pass on a pool of threads, by default one per core,
for the whole process. Where the agent shares its machine with the auctioneer or other agents, a
pool as large as the machine competes with them for every core (its threads also keep spinning for
a while after each pass): ``threads=1`` on a 2-core machine leaves a core to the market's protocol.

Several agents can share one loaded model, each with its own caches: :meth:`TransformersModel.fork`,
or :class:`agent_client.llm.batched.BatchedModel`, which also runs their rounds as one forward pass.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent_client.llm.agent import LLMAgent, shape_distribution
from agent_client.llm.model_files import load_model

if TYPE_CHECKING:
    from agent_client.llm.batched import BatchedModel

log = logging.getLogger(__name__)

DEFAULT_SYSTEM = "You are a helpful assistant."  # an instruct model's system message without an instruction


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """How many leading ids ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:  # the usual case (one text extends the other), compared in C
        return n
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def id_encoder(tokenizer: Any) -> Callable[[str], list[int]]:
    """What ``tokenizer(text).input_ids`` gives, the cheapest way the tokenizer allows: a fast
    tokenizer's Rust backend asked for ids without offsets (60 % of the call's time at 400 tokens,
    40 % at 20), where nothing that the call would set up for the text (truncation, padding) is set
    on the backend; the call itself otherwise."""
    backend: Any = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    plain = backend is not None and backend.truncation is None and backend.padding is None
    if plain and hasattr(backend, "encode_batch_fast"):
        return lambda text: backend.encode_batch_fast([text])[0].ids
    return lambda text: tokenizer(text).input_ids


def use_torch_threads(threads: int | None) -> None:
    """Run this process's torch work on ``threads`` threads (torch's pool is process-wide); None
    leaves torch's default, one per core."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError("threads must be at least 1")
    import torch

    torch.set_num_threads(threads)


@dataclass(eq=False)
class CachedText:
    """The key/value cache of one text's ids, and the next-token logits after them (compared by identity)."""

    ids: list[int]
    cache: Any
    logits: Any
    guessed: bool = False  # its last id is the lookahead's guess, not yet asked for


class TransformersModel:
    """A local causal LM; ``model`` is a name, a path, or an already loaded model (then pass ``tokenizer``).
    ``threads``: see :func:`use_torch_threads`."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        temperature: float = 1.0,
        top_k: int | None = 50,
        top_p: float | None = None,
        device: str = "cpu",
        cached_texts: int = 8,
        lookahead: bool = False,
        threads: int | None = None,
    ) -> None:
        import torch

        use_torch_threads(threads)
        if isinstance(model, str):
            model, tokenizer = load_model(model)
        if tokenizer is None:
            raise ValueError("pass the tokenizer along with a loaded model")
        if cached_texts < 1:
            raise ValueError("cached_texts must be at least 1")
        self.torch = torch
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self._ids_of = id_encoder(tokenizer)
        self.device = device
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.cached_texts = cached_texts
        # Newer transformers name the argument ``cache``; older ones ``past_key_values``.
        self._cache_argument = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self._cached: list[CachedText] = []  # most recently used last
        self._lock = threading.Lock()  # one forward pass at a time (the runtime calls from threads)
        self._decoded: dict[int, str] = {}
        self.lookahead = lookahead
        self.forward_passes = 0  # run by this model's own calls and its lookahead
        self.lookahead_guesses = 0  # guesses run; of them, found ready by the next call:
        self.lookahead_hits = 0
        self._lookahead_worker: ThreadPoolExecutor | None = None
        self._guess: Future[None] | None = None
        self._predicted: tuple[str, list[int]] | None = None  # the guess's text and its ids, tokenised ahead

    def fork(self, **shaping: Any) -> TransformersModel:
        """Another model over the same loaded weights and tokenizer, with its own caches; ``shaping``
        overrides temperature, top_k, top_p or lookahead. Agents that share a base model (each with its own
        instruction) can then run in one process with the weights loaded once."""
        settings = {
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "lookahead": self.lookahead,
            **shaping,
        }
        return TransformersModel(
            self.model, self.tokenizer, device=self.device, cached_texts=self.cached_texts, **settings
        )

    def token_ids(self, text: str) -> list[int]:
        predicted = self._predicted
        if predicted is not None and predicted[0] == text:
            return predicted[1]
        ids = self._ids_of(text)
        if not ids:
            ids = [self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else 0]
        return ids

    def next_token_logits(self, text: str) -> Any:
        """The last position's logits (float32) after ``text``, reusing the cache where ids agree."""
        return self._ids_and_logits(text)[1]

    def _ids_and_logits(self, text: str) -> tuple[list[int], Any]:
        ids = self.token_ids(text)
        with self._lock:
            return ids, self._logits_after(ids)

    def _logits_after(self, ids: list[int]) -> Any:
        from agent_client.llm.growing_cache import new_cache

        best, shared = None, 0
        for entry in self._cached:
            length = common_prefix_length(entry.ids, ids)
            if length > shared:
                best, shared = entry, length
        if best is not None and shared == len(ids) == len(best.ids):
            best.ids = ids  # the same ids: the lookahead recognises the cache by this very list
            self.lookahead_hits += best.guessed
            best.guessed = False
            self._touch(best)
            return best.logits
        keep = min(shared, len(ids) - 1)  # at least one id is fed, to get its logits
        if best is None or keep == 0:
            entry = CachedText([], new_cache(), None)
            keep = 0
        else:
            entry = best
            if keep < len(entry.ids):
                entry.cache.crop(keep - len(entry.ids))  # negative: drop that many (any transformers version)
        self._extend(entry, ids, keep)
        self._touch(entry)
        return entry.logits

    def _extend(self, entry: CachedText, ids: list[int], keep: int) -> None:
        """Run the model on ``ids[keep:]`` after ``entry``'s cache (which holds ``ids[:keep]``), and
        make ``entry`` the cache of all of ``ids`` with the logits after them."""
        fresh = self.torch.tensor([ids[keep:]], device=self.device)
        # Inference mode, not just no_grad: no version counters or view tracking on the tensors the
        # pass makes (a forward pass of the 4-layer benchmark model 2.83 -> 2.65 ms).
        with self.torch.inference_mode():
            output = self.model(input_ids=fresh, use_cache=True, **{self._cache_argument: entry.cache})
        self.forward_passes += 1
        entry.ids, entry.logits = ids, output.logits[0, -1].float()  # (the cache was extended in place)
        entry.guessed = False

    def _touch(self, entry: CachedText) -> None:
        """Mark ``entry`` most recently used; forget the least recently used beyond ``cached_texts``."""
        if entry in self._cached:
            self._cached.remove(entry)
        self._cached.append(entry)
        del self._cached[: -self.cached_texts]

    def full_logits(self, text: str) -> Any:
        """The same logits from a full forward pass without any cache (the reference for tests)."""
        ids = self.torch.tensor([self.token_ids(text)], device=self.device)
        with self.torch.no_grad():
            return self.model(input_ids=ids, use_cache=False).logits[0, -1].float()

    def decoded(self, token_id: int) -> str:
        """A token id's text, decoded once ("" for a special token)."""
        text = self._decoded.get(token_id)
        if text is None:
            text = self._decoded[token_id] = self.tokenizer.decode([token_id], skip_special_tokens=True)
        return text

    def frame(self, instruction: str) -> str:
        """What precedes the market's text for this model (see the module's "Framing")."""
        if not getattr(self.tokenizer, "chat_template", None):
            return instruction
        system = [{"role": "system", "content": instruction or DEFAULT_SYSTEM}]
        return str(self.tokenizer.apply_chat_template(system, tokenize=False, add_generation_prompt=True))

    def _look_ahead(self, text: str, ids: list[int], logits: Any) -> None:
        """Extend the cache of ``text`` (whose ids are ``ids``) by its most likely next id, in the background."""
        if self._lookahead_worker is None:
            self._lookahead_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-lookahead")
        self._guess = self._lookahead_worker.submit(self._extend_if_unchanged, text, ids, int(logits.argmax()))

    def _extend_if_unchanged(self, text: str, ids: list[int], guess: int) -> None:
        predicted = text + self.decoded(guess)
        predicted_ids = self.token_ids(predicted)  # the whole text, as the next round would tokenise it
        self._predicted = (predicted, predicted_ids)
        extended = [*ids, guess]
        if predicted_ids == extended:  # no seam merged: the cache is kept under the very list asked for next
            extended = predicted_ids
        with self._lock:
            # The cache these ids were computed into, unless a later call has moved it on since.
            entry = next((entry for entry in self._cached if entry.ids is ids), None)
            if entry is None:
                return
            try:
                self._extend(entry, extended, len(ids))
                entry.guessed = True
                self.lookahead_guesses += 1
            except Exception:
                log.exception("the lookahead's forward pass failed; the next round computes its own")
                self._cached.remove(entry)  # its cache may be half extended

    def wait_for_lookahead(self) -> None:
        """Return once the last lookahead has run, or found its text moved on."""
        if self._guess is not None:
            self._guess.result()

    def next_token_distribution(self, text: str) -> dict[str, float]:
        ids, logits = self._ids_and_logits(text)
        if self.lookahead:
            self._look_ahead(text, ids, logits)
        logprobs = self.torch.log_softmax(logits, dim=-1)
        k = min(self.top_k or logprobs.shape[0], logprobs.shape[0])
        top = self.torch.topk(logprobs, k)
        pairs = [
            (self.decoded(token_id), float(logprob))
            for token_id, logprob in zip(top.indices.tolist(), top.values.tolist(), strict=True)
        ]
        return shape_distribution(pairs, self.temperature, self.top_k, self.top_p)


class TransformersAgent(LLMAgent):
    """``--agent agent_client.llm.hf:TransformersAgent --param model=gpt2 --param bid=1``.

    ``model`` may also be a loaded :class:`TransformersModel` (its weights are shared, see
    :meth:`TransformersModel.fork`) or a :class:`~agent_client.llm.batched.BatchedModel` (shared, and
    the agents' rounds batched). ``threads``: torch's threads in this process (:func:`use_torch_threads`).
    """

    def __init__(
        self,
        model: str | TransformersModel | BatchedModel,
        bid: float = 1.0,
        instruction: str = "",
        temperature: float = 1.0,
        top_k: int | None = 50,
        top_p: float | None = None,
        lookahead: bool = False,
        threads: int | None = None,
    ) -> None:
        from agent_client.llm.batched import BatchedModel

        use_torch_threads(threads)
        if isinstance(model, BatchedModel):
            if lookahead:
                raise ValueError("lookahead needs a model of the agent's own, not a BatchedModel's member")
            loaded = model.member(temperature=temperature, top_k=top_k, top_p=top_p)
        elif isinstance(model, TransformersModel):
            loaded = model.fork(temperature=temperature, top_k=top_k, top_p=top_p, lookahead=lookahead)
        else:
            loaded = TransformersModel(model, None, temperature, top_k, top_p, lookahead=lookahead)
        super().__init__(loaded, bid, instruction)
