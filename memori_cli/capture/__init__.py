"""Transparent capture and injection for LLM clients: ``mem.llm.register(client)``.

Supported: ``openai.OpenAI``/``AsyncOpenAI`` (``chat.completions.create``, streaming too, and
``responses.create``), ``anthropic.Anthropic``/``AsyncAnthropic`` (``messages.create`` and
``messages.stream``), and ``llama_cpp.Llama`` (``create_chat_completion``). A client pointed
at any OpenAI-compatible server (``base_url``) works the same. The SDKs are never imported
here: a client is recognised by its class.

The caller gets exactly what the unwrapped method returns. Pass ``memori_inject=False`` to one
call, or set ``mem.llm.injection.enabled = False``, to leave memories out.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, TypeVar

from ..attribution import Attribution
from ..config import read_file
from . import inject
from .anthropic_api import MessagesAdapter
from .core import Adapter, Call, Conversation, tap, wrap
from .inject import InjectionSettings
from .openai_api import ChatAdapter, ResponsesAdapter
from .writer import Writer, spool_path, spooled

if TYPE_CHECKING:
    from ..memori import Memori

__all__ = ["LLM", "InjectionSettings", "spool_path", "spooled"]

ClientT = TypeVar("ClientT")
SUPPORTED = (
    "openai.OpenAI, openai.AsyncOpenAI, anthropic.Anthropic, anthropic.AsyncAnthropic, "
    "llama_cpp.Llama"
)


def _kind(client: Any) -> str | None:
    for cls in type(client).__mro__:
        package = cls.__module__.split(".")[0]
        if (package, cls.__name__) in (("openai", "OpenAI"), ("anthropic", "Anthropic")):
            return package
        if (package, cls.__name__) in (("openai", "AsyncOpenAI"), ("anthropic", "AsyncAnthropic")):
            return f"async-{package}"
        if (package, cls.__name__) == ("llama_cpp", "Llama"):
            return "llama_cpp"
    return None


class LLM:
    """``mem.llm``: registers clients, holds the injection settings and the capture writer."""

    def __init__(self, mem: Memori):
        self._mem = mem
        self.injection = InjectionSettings.from_config(read_file().get("injection", {}))
        self.writer = Writer(mem)

    def register(self, client: ClientT) -> ClientT:
        """Wrap ``client`` in place (and return it): every call is captured and gets the
        entity's memories in its system prompt. Registering again is harmless.

        Raises ``TypeError`` for a client of another kind.
        """
        kind = _kind(client)
        if kind is None:
            raise TypeError(
                f"memori cannot wrap a {type(client).__module__}.{type(client).__name__}; "
                f"supported clients: {SUPPORTED}"
            )
        is_async = kind.startswith("async-")
        target: Any = client
        if kind.endswith("openai"):
            self._patch(target.chat.completions, "create", ChatAdapter("openai.chat"), is_async)
            self._patch(target.responses, "create", ResponsesAdapter(), is_async)
        elif kind.endswith("anthropic"):
            self._patch(target.messages, "create", MessagesAdapter(), is_async)
            self._patch_stream_helper(target.messages, is_async)
        else:
            self._patch(target, "create_chat_completion", ChatAdapter("llama_cpp"), False)
        return client

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every captured exchange is in the store; False on timeout."""
        return self.writer.flush(timeout)

    @property
    def failures(self) -> int:
        """Exchanges this process could not store (they went to the spool file)."""
        return self.writer.failures

    # -- used by calls ---------------------------------------------------------------------
    def attribution(self) -> Attribution:
        """The caller's attribution now, with its session (started if there is none)."""
        self._mem._session()
        return self._mem.current

    def block(self, attribution: Attribution, conversation: Conversation) -> str | None:
        """The memory block for a call, or None; marks what it injects as used."""
        chosen = inject.select(
            self._mem, attribution.entity_id, conversation.query, conversation.present(),
            self.injection,
        )  # fmt: skip
        if chosen:
            self.writer.submit(functools.partial(self._mem.mark_used, [c.hit for c in chosen]))
        return inject.render(chosen)

    # -- patching --------------------------------------------------------------------------
    def _patch(self, owner: Any, name: str, adapter: Adapter, is_async: bool) -> None:
        method = getattr(owner, name)
        original = getattr(method, "__memori_original__", method)
        setattr(owner, name, wrap(self, adapter, original, is_async=is_async))

    def _patch_stream_helper(self, messages: Any, is_async: bool) -> None:
        """``messages.stream(...)`` returns a manager that sends the request on ``with``; its
        request is swapped for one whose raw event stream is tapped."""
        method = messages.stream
        original = getattr(method, "__memori_original__", method)
        adapter = MessagesAdapter()
        attr = (
            "_AsyncMessageStreamManager__api_request"
            if is_async
            else "_MessageStreamManager__api_request"
        )

        @functools.wraps(original)
        def stream(**kwargs: Any) -> Any:
            call = Call(self, adapter, kwargs)
            if not is_async:
                manager = original(**call.prepare(kwargs))
                send = getattr(manager, attr)
                setattr(manager, attr, lambda: tap(send(), call))
                return manager
            manager = original(**kwargs)
            pending = getattr(manager, attr)

            async def request() -> Any:
                sent = await call.aprepare(kwargs)
                if sent is kwargs:
                    raw = await pending
                else:  # the request to send is the one with memories in it
                    pending.close()
                    raw = await getattr(original(**sent), attr)
                return tap(raw, call)

            setattr(manager, attr, request())
            return manager

        stream.__memori_original__ = original  # type: ignore[attr-defined]
        messages.stream = stream
