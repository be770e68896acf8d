"""Chat backends for ``memori chat``: a local GGUF model, an OpenAI-compatible endpoint, or
Anthropic, each a real client wrapped by ``mem.llm.register`` so that every exchange is
captured and gets memories like any other app's call."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import gguf_file
from .augment.endpoint import api_key, endpoint_url
from .config import is_endpoint
from .errors import MemoriError
from .errors import NoBackend as NoBackend  # re-exported: chat.NoBackend

if TYPE_CHECKING:
    from .memori import Memori

SYSTEM_PROMPT = (
    "You are a helpful assistant with long-term memory of this user. Answer briefly and "
    "use what you remember when it helps."
)
BACKENDS = ("local", "openai", "anthropic")
HOW_TO_CONFIGURE = """no chat backend is configured. Use one of:
  memori chat --model PATH.gguf            a local GGUF model (pip install 'memori-cli[local]')
  memori model add PATH.gguf               ...or make it the default chat model
  OPENAI_BASE_URL=http://localhost:11434/v1 memori chat --model llama3.2
                                           any OpenAI-compatible server (Ollama, llama.cpp,
                                           LM Studio, vLLM); or OPENAI_API_KEY for OpenAI
  ANTHROPIC_API_KEY=... memori chat        Anthropic"""


@dataclasses.dataclass
class Backend:
    """A chat model to talk to: ``reply(messages)`` streams the answer's text."""

    name: str
    model: str
    reply: Callable[[list[dict[str, Any]]], Iterator[str]]


def choose(
    mem: Memori,
    *,
    backend: str | None = None,
    model: str | None = None,
    base_url: str | None = None,
    max_tokens: int = 1024,
) -> Backend:
    """The backend to chat with: the one named, else a GGUF ``model`` path, else an
    OpenAI-compatible endpoint (``base_url``, ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``), else
    Anthropic (``ANTHROPIC_API_KEY``), else the configured chat model. Raises
    :class:`NoBackend` saying how to configure one."""
    if backend is not None and backend not in BACKENDS:
        raise NoBackend(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    base_url = base_url or os.environ.get("OPENAI_BASE_URL")
    api_key_env = ""
    if backend is None:
        if model and (model.endswith(".gguf") or Path(model).is_file()):
            backend = "local"
        elif base_url or os.environ.get("OPENAI_API_KEY"):
            backend = "openai"
        elif os.environ.get("ANTHROPIC_API_KEY"):
            backend = "anthropic"
        elif is_endpoint(mem.config.chat_model):
            # The endpoint registered for extraction (memori model add --endpoint).
            backend, model = "openai", model or mem.config.chat_name
            base_url = endpoint_url(mem.config.chat_model).removesuffix("/chat/completions")
            api_key_env = mem.config.chat_api_key_env
        elif mem.config.chat_model != "none":
            backend, model = "local", model or mem.config.chat_model
        else:
            raise NoBackend(HOW_TO_CONFIGURE)
    if backend == "local":
        return _local(mem, model or mem.config.chat_model, max_tokens)
    if backend == "openai":
        return _openai(mem, model or os.environ.get("OPENAI_MODEL", "gpt-4o-mini"), base_url,
                       max_tokens, api_key_env)  # fmt: skip
    return _anthropic(mem, model or os.environ.get("ANTHROPIC_MODEL", "claude-sonnet-4-5"),
                      max_tokens)  # fmt: skip


def _require(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise NoBackend(
            f"this backend needs the {module} package: pip install 'memori-cli[{extra}]'"
        ) from None


def _local(mem: Memori, path: str, max_tokens: int) -> Backend:
    if not path or path == "none":
        raise NoBackend(HOW_TO_CONFIGURE)
    if not Path(path).is_file():
        raise NoBackend(f"{path}: no such model file")
    try:
        gguf_file.check(path)  # a damaged file: say so, before llama.cpp fails inside
    except MemoriError as exc:
        raise NoBackend(str(exc)) from None
    llama_cpp = _require("llama_cpp", "local")
    try:
        model = llama_cpp.Llama(model_path=path, n_ctx=4096, verbose=False)
    except (ValueError, RuntimeError) as exc:
        raise NoBackend(f"{path}: cannot load the model: {exc}") from None
    mem.llm.register(model)

    def reply(messages: list[dict[str, Any]]) -> Iterator[str]:
        for chunk in model.create_chat_completion(
            messages=messages, stream=True, max_tokens=max_tokens
        ):
            text = chunk["choices"][0]["delta"].get("content")
            if text:
                yield text

    return Backend("local", Path(path).name, reply)


def _openai(
    mem: Memori, model: str, base_url: str | None, max_tokens: int, api_key_env: str = ""
) -> Backend:
    openai = _require("openai", "openai")
    # Local servers take any key; the SDK insists on one.
    try:
        named = api_key(api_key_env or None)
    except MemoriError as exc:
        raise NoBackend(str(exc)) from None
    key = named or os.environ.get("OPENAI_API_KEY") or ("not-needed" if base_url else None)
    if key is None:
        raise NoBackend(HOW_TO_CONFIGURE)
    client = openai.OpenAI(base_url=base_url, api_key=key)
    mem.llm.register(client)

    def reply(messages: list[dict[str, Any]]) -> Iterator[str]:
        stream = client.chat.completions.create(
            model=model, messages=messages, stream=True, max_tokens=max_tokens
        )
        with stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content

    return Backend("openai", model, reply)


def _anthropic(mem: Memori, model: str, max_tokens: int) -> Backend:
    anthropic = _require("anthropic", "anthropic")
    client = anthropic.Anthropic()
    mem.llm.register(client)

    def reply(messages: list[dict[str, Any]]) -> Iterator[str]:
        system = " ".join(m["content"] for m in messages if m["role"] == "system")
        turns = [m for m in messages if m["role"] != "system"]
        with client.messages.stream(
            model=model, max_tokens=max_tokens, system=system, messages=turns
        ) as stream:
            yield from stream.text_stream

    return Backend("anthropic", model, reply)
