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
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..attribution import Attribution
from ..config import read_file
from . import inject
from .anthropic_api import MessagesAdapter
from .core import Adapter, Call, Conversation, tap, wrap
from .inject import InjectionSettings
from .openai_api import ChatAdapter, ResponsesAdapter
from .sink import CaptureSink
from .writer import Writer, forget_spooled, spool_path, spooled

if TYPE_CHECKING:
    from ..host import Host

__all__ = ["LLM", "CaptureSink", "InjectionSettings", "forget_spooled", "spool_path", "spooled"]

#: The coordinator that owns ``mem.llm`` (:class:`memori_cli.Memori`); ``register`` returns it.
HostT = TypeVar("HostT", bound="Host")
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


def _llama_counter(model: Any) -> inject.TokenCounter:
    """Tokens of a text by the llama-cpp model's own tokenizer (the estimate if it fails)."""

    def count(text: str) -> int:
        try:
            return len(model.tokenize(text.encode("utf-8"), add_bos=False, special=False))
        except Exception:  # a model without a usable vocabulary: estimate
            return inject.estimate_tokens(text)

    return count


class LLM(Generic[HostT]):
    """``mem.llm``: registers clients, holds the injection settings and the capture writer.

    Captured exchanges go to ``sink`` (:class:`~memori_cli.capture.sink.CaptureSink`);
    injection reads the host's store and recall.
    """

    def __init__(self, mem: HostT, sink: CaptureSink):
        self._mem = mem
        self._sink = sink
        self.injection = InjectionSettings.from_config(read_file().get("injection", {}))
        self.writer = Writer(sink)
        #: The block injected into the most recent call (None if it got none): `/why` in chat.
        self.last_block: str | None = None

    def register(self, *clients: Any) -> HostT:
        """Wrap each client in place: every call through it is captured and gets the entity's
        memories in its system prompt. Returns the :class:`~memori_cli.Memori` itself, so calls
        chain (``Memori(conn=...).llm.register(client).attribution(...)``); the caller's
        client objects are the ones that capture. Registering again is harmless.

        Raises ``TypeError`` for a client of another kind, or when no client is given; nothing
        is wrapped then (every client is checked before the first is wrapped).
        """
        if not clients:
            raise TypeError("register() needs at least one client to wrap")
        kinds = []
        for client in clients:
            kind = _kind(client)
            if kind is None:
                raise TypeError(
                    f"memori cannot wrap a {type(client).__module__}.{type(client).__name__}; "
                    f"supported clients: {SUPPORTED}"
                )
            kinds.append(kind)
        for client, kind in zip(clients, kinds, strict=True):
            self._wrap(client, kind)
        return self._mem

    def _wrap(self, client: Any, kind: str) -> None:
        is_async = kind.startswith("async-")
        target: Any = client
        if kind.endswith("openai"):
            self._patch(target.chat.completions, "create", ChatAdapter("openai.chat"), is_async)
            self._patch(target.responses, "create", ResponsesAdapter(), is_async)
        elif kind.endswith("anthropic"):
            self._patch(target.messages, "create", MessagesAdapter(), is_async)
            self._patch_stream_helper(target.messages, is_async)
        else:
            adapter = ChatAdapter("llama_cpp")
            adapter.count_tokens = _llama_counter(target)
            self._patch(target, "create_chat_completion", adapter, False)

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
        return self._sink.session()

    def select(
        self,
        attribution: Attribution,
        conversation: Conversation,
        settings: InjectionSettings | None = None,
        count: inject.TokenCounter | None = None,
    ) -> list[inject.Injected]:
        """What goes into the block for a call, best first (``scripts/eval_injection.py``
        measures this, the very path a wrapped call takes). ``count`` counts a text's
        tokens with the model's tokenizer, where the client has one."""
        return inject.select(
            self._mem, attribution.entity_id, conversation.query, conversation.present(),
            settings or self.injection, count or inject.estimate_tokens,
        )  # fmt: skip

    def block(
        self,
        attribution: Attribution,
        conversation: Conversation,
        count: inject.TokenCounter | None = None,
    ) -> str | None:
        """The memory block for a call, or None.

        Injected hits are not marked used: a hit injected because it ranked high would rank
        higher next time, whether or not it helped (use counts come from `mem.mark_used`).
        """
        self.last_block = inject.render(self.select(attribution, conversation, count=count))
        return self.last_block

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
