"""Secret redaction: API keys, tokens and private keys are replaced before anything is stored.

A redacted secret becomes ``[REDACTED:<kind>]``; the raw value never reaches the database.
"""

from __future__ import annotations

import re

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    (
        "private-key",
        re.compile(
            r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\Z)",
            re.S,
        ),
    ),
    ("anthropic-key", re.compile(r"\bsk-ant-[A-Za-z0-9_\-]{16,}")),
    ("openai-key", re.compile(r"\bsk-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_]{20,}")),
    ("github-token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})")),
    ("aws-access-key", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b")),
    (
        "aws-secret-key",
        re.compile(
            r"(?i)(aws_?secret_?(?:access_?)?key\s*[:=]\s*[\"']?)[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])"
        ),
    ),
    ("slack-token", re.compile(r"\bxox[abprs]-[A-Za-z0-9\-]{10,}")),
    ("google-api-key", re.compile(r"\bAIza[0-9A-Za-z_\-]{35}")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}")),
]

# A cheap pre-check: text holding none of these cannot hold a secret we know.
_HINTS = ("sk-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "AKIA", "ASIA", "AGPA",
          "AIDA", "AROA", "xox", "AIza", "eyJ", "PRIVATE KEY", "ecret", "ECRET")  # fmt: skip


def redact(text: str) -> str:
    """``text`` with every known kind of secret replaced by ``[REDACTED:<kind>]``."""
    if not any(hint in text for hint in _HINTS):
        return text
    for kind, pattern in _PATTERNS:
        # A pattern with a group keeps it (the "aws_secret_access_key = " label).
        keep = r"\1" if pattern.groups else ""
        text = pattern.sub(f"{keep}[REDACTED:{kind}]", text)
    return text
