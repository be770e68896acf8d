"""EndpointExtractor: extraction through any OpenAI-compatible chat-completions endpoint.

llama.cpp's ``llama-server``, ``python -m llama_cpp.server``, Ollama, LM Studio, vLLM or a
hosted API: anything that answers ``POST .../v1/chat/completions``. The prompt, the schema and
the validation are :class:`~memori_cli.augment.llm.LlamaCppExtractor`'s.

Structured output is asked for the way servers understand it, best first, and the first form
a server accepts is kept for the rest of the run:

1. ``response_format: {"type": "json_schema", ...}`` (OpenAI, vLLM, LM Studio, Ollama,
   llama-server);
2. ``{"type": "json_object", "schema": ...}`` (llama-cpp-python's server, llama-server);
3. nothing: the schema goes into the prompt and the answer is parsed and validated like any other.

Only the standard library speaks HTTP (:mod:`urllib`), and only to the configured URL. The API
key is read from the environment variable the user named, at request time; it is never stored.
A request runs in a helper thread while the caller's thread renews the job's lease; it times
out, and connection failures, timeouts, 429 and 5xx answers are retried with exponential
backoff (``Retry-After`` honoured, capped). What still fails raises :class:`EndpointError`
(the job is retried later); output that is not extraction JSON twice raises
:class:`ExtractionError` with the raw text (the job fails with it, for ``memori jobs show``).
"""

from __future__ import annotations

import json
import os
import queue
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from ..errors import EndpointError, ExtractionError
from .extract import Turn
from .llm import PROMPT_VERSION, SYSTEM_PROMPT, ChatExtractor, parse_answer, schema

#: The forms of ``response_format`` tried in order; ``None`` is the schema in the prompt.
FORMATS = ("json_schema", "json_object", None)
#: HTTP statuses worth asking again: the server is busy, overloaded or restarting.
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
#: Statuses with which a server refuses a ``response_format`` it does not know.
FORMAT_STATUSES = frozenset({400, 415, 422, 501})
_FORMAT_WORDS = re.compile(r"response_format|json_schema", re.IGNORECASE)


def endpoint_url(url: str) -> str:
    """The chat-completions address for ``url``: a server root (``http://host:8080``), its
    ``/v1`` base, or the full ``.../chat/completions`` address. Raises :class:`EndpointError`
    for anything that is not an http(s) URL with a host."""
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise EndpointError(
            f"{url!r} is not an http:// or https:// URL of a chat-completions endpoint "
            "(for example http://127.0.0.1:8080/v1)"
        )
    try:
        parsed.port  # noqa: B018 - raises for a port that is not a number
    except ValueError as exc:
        raise EndpointError(f"{url!r} is not a valid URL: {exc}") from None
    path = parsed.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path = (path if path.endswith("/v1") else path + "/v1") + "/chat/completions"
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, "", ""))


def api_key(variable: str | None) -> str | None:
    """The API key from the environment variable named ``variable`` (None: no key)."""
    if not variable:
        return None
    value = os.environ.get(variable)
    if not value:
        raise EndpointError(
            f"the environment variable {variable} (named for the endpoint's API key) is not "
            "set: export it, or register the endpoint without --api-key-env"
        )
    return value


def list_models(
    url: str, *, api_key_env: str | None = None, timeout: float = 10.0
) -> list[str] | None:
    """The model ids the server at chat-completions address ``url`` lists (``GET .../models``),
    or None when it has no such route. Raises :class:`EndpointError` when it cannot be reached
    or refuses the key."""
    models_url = url.removesuffix("/chat/completions") + "/models"
    headers = {"Accept": "application/json"}
    key = api_key(api_key_env)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(models_url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise EndpointError(
                f"the endpoint {models_url} refused the API key (HTTP {exc.code})"
            ) from None
        return None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EndpointError(
            f"cannot reach the endpoint {models_url}: {reason} (is the server running? "
            "--no-check registers it anyway)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return None
    return [str(item.get("id")) for item in items if isinstance(item, dict) and item.get("id")]


class _Status(Exception):
    """An HTTP answer that is not 200."""

    def __init__(self, status: int, body: str, retry_after: float | None):
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body
        self.retry_after = retry_after


class EndpointExtractor(ChatExtractor):
    """Extraction by the model ``model`` behind an OpenAI-compatible endpoint at ``url``."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        n_ctx: int = 4096,
        max_items: int = 8,
        max_chars: int = 160,
        max_tokens: int = 1024,
        timeout: float = 300.0,
        retries: int = 3,
        backoff: float = 1.0,
        renew_every: float = 30.0,
    ):
        if not model.strip():
            raise EndpointError("the endpoint's model name is empty (--name MODEL)")
        self.url = endpoint_url(url)
        self.model = model.strip()
        self.api_key_env = api_key_env or None
        api_key(self.api_key_env)  # a missing variable is an error now, not at the first job
        parts = urllib.parse.urlsplit(self.url)
        # Host and port only: credentials in a URL never reach the store.
        host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
        #: Names the model and where it is served; the prompt version as for GGUF models.
        self.name = f"llm:{self.model}@{host}/p{PROMPT_VERSION}"
        self.n_ctx = n_ctx
        self.max_items = max_items
        self.max_chars = max_chars
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.renew_every = renew_every
        #: Index into :data:`FORMATS` of the first form this server accepted.
        self.format_index = 0
        self.generated_tokens = 0
        self.generation_seconds = 0.0
        #: Requests sent, retries included (for tests and benchmarks).
        self.requests = 0

    # -- ChatExtractor -------------------------------------------------------------------
    def _tokens(self, text: str) -> int:
        # No tokenizer at hand: about three characters a token errs on the safe side for
        # English with small-vocabulary models.
        return len(text) // 3 + 1

    def _n_ctx(self) -> int:
        return self.n_ctx

    def _system_tokens(self) -> int:
        # Without structured output the schema rides in the system prompt: count it (for as
        # many turns as a chunk could hold, which only changes the enum of turn numbers).
        extra = 0
        if FORMATS[self.format_index] is None:
            shape = schema(64, max_items=self.max_items, max_chars=self.max_chars)
            extra = self._tokens(json.dumps(shape, separators=(",", ":"))) + 30
        return self._tokens(SYSTEM_PROMPT) + extra

    def _ask(
        self, chunk: list[Turn], summary: str | None, between: Callable[[], None] | None
    ) -> dict[str, Any]:
        shape = schema(len(chunk), max_items=self.max_items, max_chars=self.max_chars)
        raw = ""
        for attempt in range(2):  # malformed output is retried once, with another seed
            body = self._body(chunk, summary, shape, attempt)
            response = self._post_formats(body, shape, chunk, summary, attempt, between)
            usage = response.get("usage") or {}
            self.generated_tokens += int(usage.get("completion_tokens") or 0)
            raw = _content(response)
            data = parse_answer(raw)
            if data is not None:
                return data
        raise ExtractionError("the model's output is not valid extraction JSON (twice)", raw)

    # -- requests ------------------------------------------------------------------------
    def _body(
        self, chunk: list[Turn], summary: str | None, shape: dict[str, Any], attempt: int
    ) -> dict[str, Any]:
        messages = self._messages(chunk, summary)
        form = FORMATS[self.format_index]
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": 0.2 if attempt == 0 else 0.7,
            "seed": attempt,
            "stream": False,
        }
        if form == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "extraction", "strict": True, "schema": shape},
            }
        elif form == "json_object":
            body["response_format"] = {"type": "json_object", "schema": shape}
        else:
            messages[0] = {
                "role": "system",
                "content": SYSTEM_PROMPT
                + "\nAnswer with one JSON object and nothing else, matching this JSON schema: "
                + json.dumps(shape, separators=(",", ":")),
            }
        return body

    def _post_formats(
        self,
        body: dict[str, Any],
        shape: dict[str, Any],
        chunk: list[Turn],
        summary: str | None,
        attempt: int,
        between: Callable[[], None] | None,
    ) -> dict[str, Any]:
        """POST ``body``; a server that refuses its ``response_format`` gets the next form."""
        while True:
            try:
                return self._post(body, between)
            except _Status as exc:
                if self._format_refused(exc):
                    self.format_index += 1
                    body = self._body(chunk, summary, shape, attempt)
                    continue
                raise EndpointError(
                    f"the endpoint {self.url} answered {exc} (model {self.model!r})"
                ) from None

    def _format_refused(self, exc: _Status) -> bool:
        """Whether the answer refuses the ``response_format`` (with a next form to try).
        llama-cpp-python's server answers 500 for a request it cannot validate, so a 5xx
        that names the field counts too."""
        if FORMATS[self.format_index] is None:
            return False
        if exc.status in FORMAT_STATUSES:
            return True
        return exc.status >= 500 and bool(_FORMAT_WORDS.search(exc.body))

    def _post(self, body: dict[str, Any], between: Callable[[], None] | None) -> dict[str, Any]:
        """One request with retries and backoff; raises :class:`_Status` for an answer not
        worth retrying, :class:`EndpointError` when the retries are spent."""
        data = json.dumps(body).encode("utf-8")
        problem = ""
        retry_after: float | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self._wait(problem_delay(self.backoff, attempt, retry_after), between)
            retry_after = None
            try:
                return self._send(data, between)
            except _Status as exc:
                if exc.status not in RETRY_STATUSES or self._format_refused(exc):
                    raise
                problem, retry_after = str(exc), exc.retry_after
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                reason = getattr(exc, "reason", exc)
                problem = f"{type(reason).__name__}: {reason}" if reason else type(exc).__name__
        raise EndpointError(
            f"the endpoint {self.url} did not answer after {self.retries + 1} tries: {problem}"
        )

    def _send(self, data: bytes, between: Callable[[], None] | None) -> dict[str, Any]:
        """POST in a helper thread; this thread renews the lease until the answer comes."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = api_key(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        answers: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)

        def send() -> None:
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    answers.put(("ok", response.read()))
            except urllib.error.HTTPError as exc:
                text = exc.read().decode("utf-8", "replace")
                answers.put(("status", _Status(exc.code, text, _retry_after(exc.headers))))
            except BaseException as exc:
                answers.put(("error", exc))

        self.requests += 1
        started = time.monotonic()
        threading.Thread(target=send, name="memori-endpoint", daemon=True).start()
        while True:
            left = self.timeout - (time.monotonic() - started)
            if left <= 0:
                # The helper thread ends on its own socket timeout; its answer is dropped.
                raise TimeoutError(f"no answer within {self.timeout:g} s")
            try:
                kind, value = answers.get(timeout=min(self.renew_every, left))
                break
            except queue.Empty:
                if between is not None:
                    between()  # renews the lease, or raises to stop
        self.generation_seconds += time.monotonic() - started
        if kind == "status":
            raise value
        if kind == "error":
            raise value
        try:
            answer = json.loads(value)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise EndpointError(
                f"the endpoint {self.url} answered something that is not JSON: {value[:200]!r}"
            ) from None
        if not isinstance(answer, dict) or not answer.get("choices"):
            raise EndpointError(
                f"the endpoint {self.url} answered without choices: {str(answer)[:200]}"
            )
        return answer

    def _wait(self, seconds: float, between: Callable[[], None] | None) -> None:
        """Sleep ``seconds``, renewing the lease meanwhile."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, self.renew_every))
            if between is not None:
                between()


def problem_delay(backoff: float, attempt: int, retry_after: float | None) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): doubling from ``backoff``, or
    what the server asked for, never more than a minute."""
    wanted = retry_after if retry_after is not None else backoff * 2 ** (attempt - 1)
    return max(0.0, min(wanted, 60.0))


def _retry_after(headers: Any) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        if value:
            try:
                return float(value) * scale
            except ValueError:
                return None
    return None


def _content(response: dict[str, Any]) -> str:
    try:
        content = response["choices"][0]["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""
    return content if isinstance(content, str) else ""
