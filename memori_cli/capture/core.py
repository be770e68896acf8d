"""What every provider adapter shares: one :class:`Call` per wrapped call, and the taps that
watch a stream without changing what the caller gets.

A call reads the attribution when it is made, injects memories into a copy of its arguments,
and captures exactly once: after the response, or when a stream ends, is closed, is dropped
early, or raises (then flagged partial). A failed call (an exception before any response)
captures nothing; the caller sees the exception unchanged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import json
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from ..store.core import now_iso
from . import inject
from .writer import Exchange

if TYPE_CHECKING:
    from ..attribution import Attribution
    from .writer import Writer

log = logging.getLogger("memori.capture")


class LLM(Protocol):
    """What a call needs of ``mem.llm`` (:class:`memori_cli.capture.LLM`)."""

    injection: inject.InjectionSettings
    writer: Writer

    def attribution(self) -> Attribution:
        """The caller's attribution now, with its session."""
        ...

    def block(
        self,
        attribution: Attribution,
        conversation: Conversation,
        count: inject.TokenCounter | None = None,
    ) -> str | None:
        """The memory block for a call, or None."""
        ...


def get(obj: Any, key: str, default: Any = None) -> Any:
    """``obj[key]`` for a mapping, else ``obj.key``: SDK objects and plain dicts alike."""
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def text_of(content: Any) -> str:
    """The text of message content: a string, or the text of its text-bearing parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(get(part, "text"), str):
                texts.append(get(part, "text"))
            elif get(part, "type") == "tool_result":
                texts.append(text_of(get(part, "content")))
        return "\n".join(t for t in texts if t)
    return ""


def tool_call_text(name: Any, arguments: Any) -> str:
    """A tool call as one line of text, for the captured transcript."""
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False, default=str)
    return f"[tool call] {name}({arguments})"


@dataclasses.dataclass
class Conversation:
    """What a call sends: the query for recall (the latest user text), the text of every
    message in it, and the turns to capture (those after the last assistant turn)."""

    query: str = ""
    texts: list[str] = dataclasses.field(default_factory=list)
    turns: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def present(self) -> set[str]:
        """Fingerprints of the messages sent (only injection needs them: computed on demand,
        off the capture path)."""
        return {inject.fingerprint(text) for text in self.texts}

    def add(self, role: str, text: str, *, new: bool, name: Any = None) -> None:
        """Note one message of the call (``new``: it comes after the last assistant turn)."""
        if not text.strip():
            return
        self.texts.append(text)
        if role == "user":
            self.query = text
        if new and role in ("user", "tool"):
            turn = {"role": role, "content": text}
            if isinstance(name, str) and name.strip():
                turn["name"] = name
            self.turns.append(turn)


class Collector(Protocol):
    """Gathers a streamed reply from its chunks or events."""

    def add(self, item: Any) -> None: ...

    def text(self) -> str: ...


class Adapter(Protocol):
    """How one API's calls are read, injected and answered."""

    source: str

    def conversation(self, kwargs: dict[str, Any]) -> Conversation: ...

    def inject(self, kwargs: dict[str, Any], block: str) -> dict[str, Any]: ...

    def streaming(self, kwargs: dict[str, Any]) -> bool: ...

    def reply(self, result: Any) -> str: ...

    def collector(self) -> Collector: ...


def add_to_system_text(system: Any, block: str) -> Any:
    """A system prompt (text, a list of text blocks, or absent) with the block appended."""
    if isinstance(system, str) and system:
        return f"{system}\n\n{block}"
    if isinstance(system, list):
        return [*system, {"type": "text", "text": block}]
    return block


class Call:
    """One wrapped call: its attribution (fixed when the call is made), its conversation and
    its single capture."""

    def __init__(self, llm: LLM, adapter: Adapter, kwargs: dict[str, Any]):
        self.llm = llm
        self.adapter = adapter
        self.inject_here = kwargs.pop("memori_inject", None)
        self.attribution = llm.attribution()
        self.started = now_iso()
        self.conversation = adapter.conversation(kwargs)
        self.streaming = adapter.streaming(kwargs)
        self._captured = False
        self._lock = threading.Lock()

    def prepare(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments with the memory block in the system prompt (a new dict; the
        caller's objects are not touched). Any failure here only skips injection."""
        enabled = self.llm.injection.enabled if self.inject_here is None else self.inject_here
        if not enabled or not self.conversation.query:
            return kwargs
        try:
            block = self.llm.block(
                self.attribution, self.conversation, getattr(self.adapter, "count_tokens", None)
            )
        except Exception as exc:
            log.warning("memori: injection skipped: %s", exc)
            return kwargs
        return kwargs if block is None else self.adapter.inject(kwargs, block)

    async def aprepare(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """:meth:`prepare` in a worker thread: recall never blocks the event loop."""
        return await asyncio.to_thread(self.prepare, kwargs)

    def capture(self, reply: str, *, partial: bool = False) -> None:
        """Queue this call's exchange for the store, once; never raises."""
        with self._lock:
            if self._captured:
                return
            self._captured = True
        try:
            messages = [dict(turn, timestamp=self.started) for turn in self.conversation.turns]
            if reply.strip():
                messages.append({"role": "assistant", "content": reply, "timestamp": now_iso()})
            if messages:
                source = f"capture:{self.adapter.source}" + (":partial" if partial else "")
                self.llm.writer.submit(Exchange(messages, self.attribution, source))
        except Exception as exc:  # pragma: no cover - defensive: capture never breaks a call
            log.warning("memori: capture failed: %s", exc)

    def result(self, result: Any) -> Any:
        """Capture a complete response, or tap a stream; returns what the caller gets."""
        if self.streaming:
            return tap(result, self)
        try:
            reply = self.adapter.reply(result)
        except Exception as exc:
            log.warning("memori: could not read the reply: %s", exc)
            reply = ""
        self.capture(reply)
        return result


class _State:
    """Shared by a stream's tap and its close hooks."""

    def __init__(self, call: Call):
        self.call = call
        self.collector = call.adapter.collector()
        self.busy = False  # inside the SDK's own next(): its closing the response is normal

    def finish(self, partial: bool) -> None:
        try:
            reply = self.collector.text()
        except Exception:  # pragma: no cover - a reply we cannot read is still captured
            reply = ""
        self.call.capture(reply, partial=partial)


def _tap_iter(source: Iterator[Any], state: _State) -> Iterator[Any]:
    ended = False
    try:
        while True:
            state.busy = True
            try:
                item = next(source)
            except StopIteration:
                ended = True
                return
            finally:
                state.busy = False
            state.collector.add(item)
            yield item
    finally:
        state.finish(partial=not ended)


async def _tap_aiter(source: AsyncIterator[Any], state: _State) -> AsyncIterator[Any]:
    ended = False
    try:
        while True:
            state.busy = True
            try:
                item = await source.__anext__()
            except StopAsyncIteration:
                ended = True
                return
            finally:
                state.busy = False
            state.collector.add(item)
            yield item
    finally:
        state.finish(partial=not ended)


def _finish_early(state_ref: weakref.ref[_State] | _State) -> None:
    state = state_ref() if isinstance(state_ref, weakref.ref) else state_ref
    if state is not None and not state.busy:
        state.finish(partial=True)


def tap(result: Any, call: Call) -> Any:
    """Watch a streamed result: the same object for SDK streams (their iterator is wrapped),
    a generator for plain iterators (llama-cpp-python's streams are generators)."""
    state = _State(call)
    if hasattr(result, "_iterator") and hasattr(result, "response"):
        source = result._iterator
        is_async = hasattr(source, "__anext__")
        result._iterator = _tap_aiter(source, state) if is_async else _tap_iter(source, state)
        _hook_close(result.response, state, is_async)
        # Dropped without ever being iterated or closed: capture when collected.
        weakref.finalize(result, _finish_early, state)
        return result
    if hasattr(result, "__anext__"):
        return _tap_aiter(result, state)
    return _tap_iter(iter(result), state)


def _hook_close(response: Any, state: _State, is_async: bool) -> None:
    """Capture when the caller closes the stream before its end."""
    name = "aclose" if is_async else "close"
    original = getattr(response, name, None)
    if original is None:
        return
    ref = weakref.ref(state)
    if is_async:

        async def aclose(*args: Any, **kwargs: Any) -> Any:
            _finish_early(ref)
            return await original(*args, **kwargs)

        setattr(response, name, aclose)
    else:

        def close(*args: Any, **kwargs: Any) -> Any:
            _finish_early(ref)
            return original(*args, **kwargs)

        setattr(response, name, close)


def wrap(llm: LLM, adapter: Adapter, original: Callable[..., Any], *, is_async: bool) -> Any:
    """``original`` (a bound SDK method) with injection and capture around it."""
    if is_async:

        @functools.wraps(original)
        async def awrapped(*args: Any, **kwargs: Any) -> Any:
            call = Call(llm, adapter, kwargs)
            return call.result(await original(*args, **await call.aprepare(kwargs)))

        awrapped.__memori_original__ = original  # type: ignore[attr-defined]
        return awrapped

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if args:  # llama-cpp-python takes messages positionally too
            kwargs = dict(inspect.signature(original).bind_partial(*args, **kwargs).arguments)
            args = ()
        call = Call(llm, adapter, kwargs)
        return call.result(original(*args, **call.prepare(kwargs)))

    wrapped.__memori_original__ = original  # type: ignore[attr-defined]
    return wrapped
