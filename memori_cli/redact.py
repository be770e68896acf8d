"""Secret redaction: API keys, tokens and private keys are replaced before anything is stored.

A redacted secret becomes ``[REDACTED:<kind>]``; the raw value never reaches the database.

Text is matched as written and also as normalised, so a secret dressed up to slip past a plain
pattern is still caught: full-width or other compatibility forms (NFKC), zero-width and soft
hyphen characters inside a key, URL-encoding (``sk%2Dant%2D...``), a key split by spaces or
line breaks into key-like chunks, and a key base64-encoded in a run of 40 or more characters.
Where a secret is only found in a normalised form, the normalised text (redacted) is what is
kept: the exact spelling of a message that carried a hidden key is not worth the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from urllib.parse import unquote

# No letter or digit right before a key, but an underscore may be (``_sk-...``, ``x_ghp_...``).
_START = r"(?<![A-Za-z0-9])"

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    (
        "private-key",
        re.compile(
            r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----.*?"
            r"(?:-----END[A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----|\Z)",
            re.S,
        ),
    ),
    ("anthropic-key", re.compile(_START + r"sk-ant-[A-Za-z0-9_\-]{16,}")),
    ("openai-key", re.compile(_START + r"sk-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_]{20,}")),
    (
        "github-token",
        re.compile(_START + r"(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})"),
    ),
    ("aws-access-key", re.compile(_START + r"(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b")),
    (
        "aws-secret-key",
        re.compile(
            r"(?i)(aws_?secret_?(?:access_?)?key\s*[:=]\s*[\"']?)[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])"
        ),
    ),
    ("slack-token", re.compile(_START + r"xox[abprs]-[A-Za-z0-9\-]{10,}")),
    ("google-api-key", re.compile(_START + r"AIza[0-9A-Za-z_\-]{35}")),
    (
        "jwt",
        re.compile(_START + r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
    ),
]

# A cheap pre-check: text holding none of these cannot hold a secret we know.
_HINTS = ("sk-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "AKIA", "ASIA", "AGPA",
          "AIDA", "AROA", "xox", "AIza", "eyJ", "PRIVATE KEY", "ecret", "ECRET")  # fmt: skip

# Invisible characters that can sit inside a key without changing how it looks.
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u2060-\u2064\ufeff]")
# A key prefix followed by chunks split by whitespace; every chunk after the first must look
# like part of a key (a digit or a capital in it), so "sk-learn and more" stays as it is.
_SPLIT = re.compile(
    _START + r"(?:sk-|gh[pousr]_|github_pat_|xox[abprs]-|AIza|AKIA|ASIA)[A-Za-z0-9_\-]*"
    r"(?:[ \t\r\n]{1,3}(?=[A-Za-z0-9_\-]*[0-9A-Z])[A-Za-z0-9_\-]+)+"
)
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_\-]{40,}={0,2}")


def _plain(text: str) -> str:
    if not any(hint in text for hint in _HINTS):
        return text
    for kind, pattern in _PATTERNS:
        # A pattern with a group keeps it (the "aws_secret_access_key = " label).
        keep = r"\1" if pattern.groups else ""
        text = pattern.sub(f"{keep}[REDACTED:{kind}]", text)
    return text


def _split(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        joined = "".join(match.group().split())
        redacted = _plain(joined)
        return redacted if redacted != joined else match.group()

    return _SPLIT.sub(one, text)


def _encoded(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        run = match.group()
        try:
            raw = base64.b64decode(run + "=" * (-len(run) % 4), altchars=b"-_")
        except (binascii.Error, ValueError):
            return run
        decoded = raw.decode("utf-8", "ignore")
        return "[REDACTED:base64-secret]" if redact(decoded) != decoded else run

    return _BASE64_RUN.sub(one, text)


def redact(text: str) -> str:
    """``text`` with every known kind of secret replaced by ``[REDACTED:<kind>]``."""
    text = _plain(text)
    view = _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))
    if view != text and _plain(view) != view:
        text = _plain(view)
    if "%" in text:
        decoded = unquote(text)
        if decoded != text and redact(decoded) != decoded:
            text = redact(decoded)
    if any(c in text for c in " \t\r\n"):
        text = _split(text)
    if len(text) >= 40:
        text = _encoded(text)
    return text


def redact_id(value: str) -> str:
    """An id (session, external id) redacted like text, but still telling ids apart.

    A redacted id gets a short digest of the original appended, so two secret-bearing ids stay
    two ids, and the same one redacts to the same text on every import (imports stay
    idempotent). An id without a secret is returned as it is.
    """
    redacted = redact(value)
    if redacted == value:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{redacted[:180]}#{digest}"
