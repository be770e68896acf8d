"""Whom a request is for, and how it wants memories: the ``X-Memori-*`` headers, else the
body's own user field, else the server's defaults.

Every id is checked as the library checks ids (:func:`~memori_cli.attribution.validate_id`):
an odd one is a 400 that names the header or field, never a guess at another entity.
"""

from __future__ import annotations

import collections
import dataclasses
import hmac
import ipaddress
import urllib.parse
from collections.abc import Mapping
from typing import Any

from ..attribution import Attribution, new_session_id, validate_id
from ..errors import InvalidIdError

ENTITY = "x-memori-entity"
PROCESS = "x-memori-process"
SESSION = "x-memori-session"
INJECT = "x-memori-inject"
BUDGET = "x-memori-budget"
TOKEN = "x-memori-token"
#: The largest ``X-Memori-Budget`` taken (tokens): far past any context window.
MAX_BUDGET = 1_000_000
_ON = {"on", "true", "1", "yes"}
_OFF = {"off", "false", "0", "no"}


class RequestError(Exception):
    """A request memori refuses before anything is sent upstream: its status and reason."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


@dataclasses.dataclass(frozen=True)
class Scope:
    """One request's attribution and its injection switches (None: the server's)."""

    attribution: Attribution
    inject: bool | None = None
    budget: int | None = None


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value as the client sent it: HTTP carries bytes, which Starlette reads as
    Latin-1; clients send UTF-8 (an entity named "José"), so the bytes are read again as such."""
    value = headers.get(name)
    if value is None:
        return None
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise RequestError(400, f"{name}: not UTF-8 text") from None


def check_token(headers: Mapping[str, str], token: str | None) -> None:
    """Raise a 401 unless the request carries the server's token (when it has one)."""
    if token is None:
        return
    given = headers.get(TOKEN, "").encode("latin-1", "replace")
    if not hmac.compare_digest(given, token.encode("utf-8")):
        raise RequestError(
            401,
            "this memori serve needs its token in the X-Memori-Token header",
            "authentication_error",
        )


def _this_machine(name: str | None, *, unspecified: bool = False) -> bool:
    """Whether a host name (no port) names this machine: localhost, or a loopback address
    (with ``unspecified``, 0.0.0.0 and :: too, which clients on Linux and macOS connect to
    this machine by)."""
    if not name:
        return False
    name = name.casefold()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback or (unspecified and address.is_unspecified)


def check_local(headers: Mapping[str, str]) -> None:
    """Raise a 403 for a request a web page made: one whose ``Origin`` is not this machine
    (any site the user visits can POST to 127.0.0.1), or one sent to a ``Host`` that is not
    this machine's (DNS rebinding: a site's own name resolving to 127.0.0.1). Without a
    token the proxy serves this machine's programs only; either kind could read the
    memories a reply carries, or plant some. Programs (SDKs, curl) send no ``Origin``."""
    host = headers.get("host")
    try:
        host_name = None if host is None else urllib.parse.urlsplit(f"//{host}").hostname
    except ValueError:  # "[::1" and the like
        host_name = ""
    if host is not None and not _this_machine(host_name, unspecified=True):
        raise RequestError(
            403,
            f"memori: this memori serve answers requests to this machine only, not to Host "
            f"{host[:100]!r}; start it with --token to serve other names",
            "permission_error",
        )
    origin = headers.get("origin")
    if origin is not None:
        try:
            local = _this_machine(urllib.parse.urlsplit(origin).hostname)
        except ValueError:
            local = False
        if not local:
            raise RequestError(
                403,
                f"memori: a request from the web page {origin[:100]!r} is refused (a page "
                "could read or change the memory through it); start memori serve with "
                "--token to let browsers in, with the token",
                "permission_error",
            )


def body_user(body: Mapping[str, Any] | None, flavor: str) -> tuple[Any, str] | None:
    """The user id a body carries (OpenAI's ``user``, Anthropic's ``metadata.user_id``) and
    the field's name, or None."""
    if body is None:
        return None
    if flavor == "anthropic":
        metadata = body.get("metadata")
        if isinstance(metadata, dict) and metadata.get("user_id") is not None:
            return metadata["user_id"], "metadata.user_id"
        return None
    return (body["user"], "user") if body.get("user") is not None else None


class Sessions:
    """The server's session for each (entity, process) whose requests name none: like a
    wrapped client's, one thread per attribution for as long as the server runs. Bounded,
    so a stream of one-off entities cannot grow it without end."""

    def __init__(self, limit: int = 10_000):
        self.limit = limit
        self._ids: collections.OrderedDict[tuple[str, str], str] = collections.OrderedDict()

    def get(self, entity: str, process: str) -> str:
        """The session id for ``entity`` and ``process``."""
        key = (entity, process)
        session = self._ids.pop(key, None) or new_session_id()
        self._ids[key] = session
        while len(self._ids) > self.limit:
            self._ids.popitem(last=False)
        return session


def resolve(
    headers: Mapping[str, str],
    body: Mapping[str, Any] | None,
    flavor: str,
    *,
    entity: str,
    process: str,
    sessions: Sessions,
) -> Scope:
    """The request's scope; a :class:`RequestError` (400) for an id or switch that is not
    usable. ``entity`` and ``process`` are the server's defaults."""
    try:
        named = header(headers, ENTITY)
        if named is not None:
            entity_id = validate_id(named, "X-Memori-Entity")
        elif (found := body_user(body, flavor)) is not None:
            entity_id = validate_id(found[0], found[1])
        else:
            entity_id = entity
        named = header(headers, PROCESS)
        process_id = validate_id(named, "X-Memori-Process") if named is not None else process
        named = header(headers, SESSION)
        session_id = (
            validate_id(named, "X-Memori-Session")
            if named is not None
            else sessions.get(entity_id, process_id)
        )
    except InvalidIdError as exc:
        raise RequestError(400, f"memori: {exc}") from None
    return Scope(
        Attribution(entity_id, process_id, session_id),
        inject=_switch(header(headers, INJECT)),
        budget=_budget(header(headers, BUDGET)),
    )


def _switch(value: str | None) -> bool | None:
    if value is None:
        return None
    if value.strip().lower() in _ON:
        return True
    if value.strip().lower() in _OFF:
        return False
    raise RequestError(400, f"memori: X-Memori-Inject: {value!r} is not on or off")


def _budget(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        budget = int(value.strip())
    except ValueError:
        budget = -1
    if not 0 <= budget <= MAX_BUDGET:
        raise RequestError(
            400, f"memori: X-Memori-Budget: {value!r} is not a token count (0-{MAX_BUDGET})"
        )
    return budget
