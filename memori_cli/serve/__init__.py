"""``memori serve``: a memory proxy that speaks the OpenAI and Anthropic HTTP APIs, so a
program in any language gets the store's recall and capture by changing its base URL.

Routes: ``POST /v1/chat/completions``, ``POST /v1/responses``, ``POST /v1/messages`` (read,
injected, forwarded, captured once; streamed or not), every other ``/v1/*`` request (``GET
/v1/models`` too) forwarded untouched, and ``GET /memori/health``.

Per request: ``X-Memori-Entity`` (else the body's ``user`` / ``metadata.user_id``, else the
server's entity), ``X-Memori-Process``, ``X-Memori-Session``, ``X-Memori-Inject: off``,
``X-Memori-Budget: N``, and ``X-Memori-Token`` where the server has a token. The caller's
``Authorization``/``x-api-key`` go to the upstream and nowhere else.

Needs the ``serve`` extra (Starlette, uvicorn, httpx).
"""

from __future__ import annotations

from .app import create_app
from .options import ServeOptions
from .running import Running, run, start

__all__ = ["Running", "ServeOptions", "create_app", "run", "start"]
