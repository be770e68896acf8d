"""The proxy as an ASGI app (Starlette), forwarding with httpx.

Each chat request is one :class:`~memori_cli.capture.core.Call`, the same as a call through
a client wrapped by ``mem.llm.register``: the same adapters read the body, the same
selection and block put memories into the system prompt (in a worker thread: recall never
blocks the event loop), and the call captures exactly once, after the reply, when the stream
ends, or, flagged partial, when it breaks or the client goes away. What the proxy adds is
only HTTP: reading the request's scope (:mod:`.identity`), forwarding, and watching the
reply's bytes go by (:mod:`.sse`) without changing them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..attribution import Attribution
from ..capture import inject
from ..capture.anthropic_api import MessagesAdapter
from ..capture.core import Adapter, Call, Collector, Conversation
from ..capture.openai_api import ChatAdapter, ResponsesAdapter
from ..errors import EmbeddingUnavailable
from . import identity
from .options import ServeOptions, anthropic_base, openai_base
from .sse import EventReader

if TYPE_CHECKING:
    from ..capture import LLM
    from ..capture.writer import Writer
    from ..memori import Memori

log = logging.getLogger("memori.serve")

HEALTH = "/memori/health"
#: The largest request body read (bytes); chat requests with images run to a few MB.
MAX_BODY = 64 << 20
# Headers that belong to one hop, not to the request or reply (RFC 9110 §7.6.1), those
# httpx sets itself, and memori's own (its token above all) which never go upstream.
_HOP = {
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
}  # fmt: skip
_NOT_FORWARDED = _HOP | {"host", "content-length", "accept-encoding", "expect"}
_BODYLESS = {"GET", "HEAD", "DELETE", "OPTIONS"}


@dataclasses.dataclass(frozen=True)
class Api:
    """An API whose calls memori reads: ``openai`` or ``anthropic`` (where the body names its
    user, how errors look, which upstream answers) and the library's adapter for it."""

    flavor: str
    adapter: Adapter


def _sourced(adapter: Any, source: str) -> Any:
    adapter.source = source  # captured as capture:serve:…, so a reader knows the way it came
    return adapter


CHAT = Api("openai", ChatAdapter("serve:openai.chat"))
RESPONSES = Api("openai", _sourced(ResponsesAdapter(), "serve:openai.responses"))
MESSAGES = Api("anthropic", _sourced(MessagesAdapter(), "serve:anthropic.messages"))


class ScopedLLM:
    """What a :class:`Call` needs of ``mem.llm``, fixed for one request: its attribution and
    its injection settings; selection, the block and the writer are ``mem.llm``'s own."""

    def __init__(self, llm: LLM[Memori], attribution: Attribution, settings: Any):
        self._llm = llm
        self._attribution = attribution
        self.injection: inject.InjectionSettings = settings
        self.writer: Writer = llm.writer

    def attribution(self) -> Attribution:
        """The request's attribution."""
        return self._attribution

    def block(
        self,
        attribution: Attribution,
        conversation: Conversation,
        count: inject.TokenCounter | None = None,
    ) -> str | None:
        """The memory block, by ``mem.llm``'s selection with this request's settings."""
        return inject.render(self._llm.select(attribution, conversation, self.injection, count))


def error_response(exc: identity.RequestError, flavor: str) -> JSONResponse:
    """A refusal in the shape the API's SDKs read (their exception carries the message)."""
    if flavor == "anthropic":
        body: dict[str, Any] = {
            "type": "error",
            "error": {"type": exc.kind, "message": exc.message},
        }
    else:
        body = {"error": {"message": exc.message, "type": exc.kind, "param": None, "code": None}}
    return JSONResponse(body, status_code=exc.status)


def _fail(status: int, message: str, flavor: str) -> JSONResponse:
    """An error of memori's own while forwarding (the upstream's errors pass as they are)."""
    return error_response(identity.RequestError(status, f"memori: {message}", "api_error"), flavor)


class TokenGate:
    """With a token configured, every request but the health check must carry it; without
    one, only this machine's programs get in (:func:`identity.check_local`: no web page, no
    DNS rebinding)."""

    def __init__(self, app: ASGIApp, token: str | None):
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != HEALTH:
            try:
                if self.token:
                    identity.check_token(Headers(scope=scope), self.token)
                else:
                    identity.check_local(Headers(scope=scope))
            except identity.RequestError as exc:
                flavor = "anthropic" if scope["path"].startswith("/v1/messages") else "openai"
                await error_response(exc, flavor)(scope, receive, send)
                return
        await self.app(scope, receive, send)


#: The event types that end a whole reply (Anthropic's, the Responses API's); chat
#: completions end with ``data: [DONE]``.
LAST_EVENTS = {"message_stop", "response.completed"}


class Tap:
    """Watches a streamed reply's events for its text, and captures the call once."""

    def __init__(self, call: Call):
        self.call = call
        self.collector: Collector = call.adapter.collector()
        self.events = EventReader()
        self.failed = False  # the upstream sent an error event: what came is partial
        # The API's last event came: the reply is whole, even if the client closes before
        # the upstream ends the stream (the SDKs close on it; some servers linger).
        self.ended = False

    def feed(self, chunk: bytes) -> None:
        """Take the bytes just passed to the client; never raises (the stream goes on)."""
        try:
            for name, data in self.events.feed(chunk):
                if data == "[DONE]":
                    self.ended = True
                    continue
                try:
                    event = json.loads(data)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                if name == "error" or event.get("type") == "error" or event.get("error"):
                    self.failed = True
                    continue
                self.collector.add(event)
                if event.get("type") in LAST_EVENTS:
                    self.ended = True
        except Exception as exc:  # pragma: no cover - a reply we cannot read still streams
            log.warning("memori serve: could not read a streamed event: %s", exc)

    def finish(self, *, complete: bool) -> None:
        """Capture what came (partial unless the stream ended cleanly)."""
        try:
            reply = self.collector.text()
        except Exception:  # pragma: no cover - a reply we cannot read is still captured
            reply = ""
        self.call.capture(reply, partial=self.failed or not (complete or self.ended))


class Relay(StreamingResponse):
    """The upstream's reply, passed on chunk by chunk as it comes. The upstream response is
    closed and the call captured in every way this can end: the stream's end, the upstream
    breaking off, or the client going away (Starlette then cancels the send)."""

    def __init__(
        self, upstream: httpx.Response, headers: list[tuple[bytes, bytes]], *,
        tap: Tap | None = None, raw: bool = False,
    ):  # fmt: skip
        self.upstream = upstream
        self.tap = tap
        self.raw = raw
        self.complete = False
        super().__init__(self._chunks(), status_code=upstream.status_code)
        self.raw_headers = headers

    async def _chunks(self) -> AsyncIterator[bytes]:
        chunks = self.upstream.aiter_raw() if self.raw else self.upstream.aiter_bytes()
        async for chunk in chunks:
            if self.tap is not None:
                self.tap.feed(chunk)
            yield chunk
        self.complete = True
        if self.tap is not None:  # now, not once the last bytes are sent: soonest in the store
            self.tap.finish(complete=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except httpx.HTTPError as exc:
            # Sent in part already: the client sees the stream cut off, as it was.
            log.warning("memori serve: the upstream broke off a reply: %s", exc)
        finally:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(Exception):
                    await self.body_iterator.aclose()  # type: ignore[attr-defined]
                await self.upstream.aclose()
            if self.tap is not None:
                self.tap.finish(complete=self.complete)


class Proxy:
    """The routes of one ``memori serve`` over one store."""

    def __init__(self, mem: Memori, options: ServeOptions):
        self.mem = mem
        self.options = options
        self.openai_url = openai_base(options.upstream) if options.upstream else None
        self.anthropic_url = (
            anthropic_base(options.anthropic_upstream) if options.anthropic_upstream else None
        )
        self.sessions = identity.Sessions()
        base = mem.llm.injection
        self.injection = (
            base if options.inject is None else dataclasses.replace(base, enabled=options.inject)
        )
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        """The upstream connection pool (opened at startup)."""
        if self._client is None:
            raise RuntimeError("the proxy is not started")
        return self._client

    # -- lifespan --------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Open the upstream pool and the store (and load the embedder) before the first
        request; store what was captured before exiting."""
        timeout = httpx.Timeout(self.options.timeout, connect=min(10.0, self.options.timeout))
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=64)
        self._client = httpx.AsyncClient(timeout=timeout, limits=limits)
        await run_in_threadpool(self._warm)
        try:
            yield
        finally:
            await self._client.aclose()
            await run_in_threadpool(self.mem.llm.flush, 10.0)

    def _warm(self) -> None:
        self.mem.store.build()
        with contextlib.suppress(EmbeddingUnavailable):
            self.mem.embedder()  # loaded once now, not by the first request's recall

    # -- routes ----------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        """``GET /memori/health``: the proxy is up (no token needed; says nothing else)."""
        return JSONResponse({"status": "ok"})

    async def chat(self, request: Request) -> Response:
        """``POST /v1/chat/completions``."""
        return await self._api(request, CHAT)

    async def responses(self, request: Request) -> Response:
        """``POST /v1/responses``."""
        return await self._api(request, RESPONSES)

    async def messages(self, request: Request) -> Response:
        """``POST /v1/messages``."""
        return await self._api(request, MESSAGES)

    async def passthrough(self, request: Request) -> Response:
        """Any other ``/v1/*`` request (``GET /v1/models`` too): forwarded untouched, to the
        Anthropic upstream when it looks like an Anthropic client's, else the OpenAI one."""
        anthropic = self.anthropic_url is not None and (
            self.openai_url is None
            or "anthropic-version" in request.headers
            or ("x-api-key" in request.headers and "authorization" not in request.headers)
        )
        flavor = "anthropic" if anthropic else "openai"
        try:
            url = self._url(flavor, request)
        except identity.RequestError as exc:
            return error_response(exc, flavor)
        headers = _forwarded(request.headers)
        content: Any = None
        length = request.headers.get("content-length")
        if request.method not in _BODYLESS or length not in (None, "0"):
            content = request.stream()
            if length is not None:
                headers.append((b"content-length", length.encode("latin-1")))
        return await self._send(request.method, url, headers, content, flavor, raw=True)

    # -- the work --------------------------------------------------------------------------
    async def _api(self, request: Request, api: Api) -> Response:
        try:
            raw = await _read_body(request)
            body = _parse(raw)
            scope = identity.resolve(
                request.headers, body, api.flavor, entity=self.options.entity,
                process=self.options.process, sessions=self.sessions,
            )  # fmt: skip
            url = self._url(api.flavor, request)
        except identity.RequestError as exc:
            return error_response(exc, api.flavor)
        headers = _forwarded(request.headers)
        if body is None:
            log.warning(
                "memori serve: %s %s: the body is not a JSON object; forwarded unchanged, "
                "nothing injected or captured", request.method, request.url.path,
            )  # fmt: skip
            return await self._send(request.method, url, headers, raw, api.flavor,
                                    note="body not read: nothing injected or captured")  # fmt: skip
        call, content = await self._prepare(api, scope, body, raw)
        return await self._send(request.method, url, headers, content, api.flavor, call=call)

    async def _prepare(
        self, api: Api, scope: identity.Scope, body: dict[str, Any], raw: bytes
    ) -> tuple[Call | None, bytes]:
        """The call, and the body to send: the client's own bytes unless memories went in."""
        settings = self.injection
        if scope.inject is not None:
            settings = dataclasses.replace(settings, enabled=scope.inject)
        if scope.budget is not None:
            settings = dataclasses.replace(settings, budget_tokens=scope.budget)
        kwargs = dict(body)
        try:
            call = Call(ScopedLLM(self.mem.llm, scope.attribution, settings), api.adapter, kwargs)
        except Exception as exc:  # a body the adapter cannot read: fail open for the call
            log.warning("memori serve: cannot read the request (%s); forwarded unchanged", exc)
            return None, raw
        wanted = settings.enabled if call.inject_here is None else call.inject_here
        # Recall runs in a worker thread; a call that gets no memories skips the hop.
        sent = await run_in_threadpool(call.prepare, kwargs) if wanted else kwargs
        if sent is kwargs and "memori_inject" not in body:
            return call, raw
        return call, _encode(sent)

    async def _send(
        self, method: str, url: str, headers: list[tuple[bytes, bytes]], content: Any,
        flavor: str, *, call: Call | None = None, raw: bool = False, note: str | None = None,
    ) -> Response:  # fmt: skip
        request = self.client.build_request(method, url, headers=headers, content=content)
        try:
            upstream = await self.client.send(request, stream=True)
        except httpx.TimeoutException:
            timeout = self.options.timeout
            return _fail(504, f"the upstream did not answer within {timeout:g} s", flavor)
        except httpx.LocalProtocolError:
            # Not the upstream's fault: a header httpx will not send. Its message quotes the
            # value, which may be the caller's key: it is left out.
            return error_response(identity.RequestError(
                400, "memori: a request header cannot be forwarded (not valid HTTP)"
            ), flavor)  # fmt: skip
        except httpx.HTTPError as exc:
            return _fail(502, f"the upstream cannot be reached: {exc}", flavor)
        reply_headers = _reply_headers(upstream.headers, decoded=not raw)
        if note:
            reply_headers.append((b"x-memori-warning", note.encode()))
        streamed = upstream.headers.get("content-type", "").startswith("text/event-stream")
        ok = upstream.status_code < 400
        if raw or streamed:
            tap = Tap(call) if call is not None and ok and streamed else None
            return Relay(upstream, reply_headers, tap=tap, raw=raw)
        try:
            data = await upstream.aread()
        except httpx.HTTPError as exc:
            return _fail(502, f"the upstream broke off its reply: {exc}", flavor)
        finally:
            await upstream.aclose()
        if call is not None and ok:
            call.capture(_reply(call, data))
        response = Response(data, status_code=upstream.status_code)
        response.raw_headers += [h for h in reply_headers if h[0] != b"content-length"]
        return response

    def _url(self, flavor: str, request: Request) -> str:
        """Where the request goes: the upstream's base and the path after ``/v1``, as the
        client wrote it (``org%2Fmodel`` stays one segment; the decoded path would not)."""
        raw = request.scope.get("raw_path")
        path = raw.decode("latin-1") if isinstance(raw, bytes) else ""
        if not path.startswith("/v1/"):  # "/%761/..." routes as /v1/ too: take the decoded
            path = request.url.path
        query = f"?{request.url.query}" if request.url.query else ""
        if flavor == "anthropic":
            if self.anthropic_url is None:
                raise identity.RequestError(
                    404, "memori: this memori serve has no Anthropic upstream: start it with "
                    "--anthropic-upstream URL (https://api.anthropic.com)", "not_found_error",
                )  # fmt: skip
            return f"{self.anthropic_url}{path}{query}"
        if self.openai_url is None:
            raise identity.RequestError(
                404, "memori: this memori serve has no OpenAI-compatible upstream: start it "
                "with --upstream URL or --model PATH.gguf", "not_found_error",
            )  # fmt: skip
        return f"{self.openai_url}{path[len('/v1') :]}{query}"


def _reply(call: Call, data: bytes) -> str:
    try:
        return call.adapter.reply(json.loads(data))
    except Exception as exc:
        log.warning("memori serve: could not read the reply (%s); the request is captured", exc)
        return ""


def _encode(body: dict[str, Any]) -> bytes:
    """The body as JSON for the upstream. A string with a lone surrogate (``"\\ud800"`` is
    valid JSON, but no UTF-8) goes as the escape the client sent, not as a 500."""
    try:
        return json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(body).encode("ascii")


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise identity.RequestError(413, f"memori: the body is over {MAX_BODY >> 20} MB")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise identity.RequestError(413, f"memori: the body is over {MAX_BODY >> 20} MB")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


def _forwarded(headers: Headers) -> list[tuple[bytes, bytes]]:
    """The client's headers for the upstream (its ``Authorization``/``x-api-key`` too, which
    memori never stores or logs), less hop-by-hop ones and memori's own; replies uncompressed,
    so the proxy reads what it passes on."""
    kept = [
        (name, value.strip(b" \t"))  # "Bearer $KEY" with an empty $KEY: httpx refuses "Bearer "
        for name, value in headers.raw
        if name.lower().decode("latin-1") not in _NOT_FORWARDED
        and not name.lower().startswith(b"x-memori-")
    ]
    return [*kept, (b"accept-encoding", b"identity")]


def _reply_headers(headers: httpx.Headers, *, decoded: bool) -> list[tuple[bytes, bytes]]:
    # uvicorn dates every reply: the upstream's date too would make two Date headers.
    drop = _HOP | {"date"} | ({"content-length", "content-encoding"} if decoded else set())
    return [(n.lower(), v) for n, v in headers.raw if n.lower().decode("latin-1") not in drop]


def create_app(mem: Memori, options: ServeOptions) -> Starlette:
    """The proxy's ASGI app over ``mem``'s store (``options`` checked by the caller)."""
    proxy = Proxy(mem, options)
    every = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    app = Starlette(
        routes=[
            Route(HEALTH, proxy.health, methods=["GET"]),
            Route("/v1/chat/completions", proxy.chat, methods=["POST"]),
            Route("/v1/responses", proxy.responses, methods=["POST"]),
            Route("/v1/messages", proxy.messages, methods=["POST"]),
            Route("/v1/{path:path}", proxy.passthrough, methods=every),
        ],
        middleware=[Middleware(TokenGate, token=options.token)],
        lifespan=proxy.lifespan,
    )
    app.state.proxy = proxy
    return app
