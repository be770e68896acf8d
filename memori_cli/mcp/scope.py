"""Whose memory one MCP server serves, and the one place a tool's ``entity`` is decided."""

from __future__ import annotations

import dataclasses

from ..attribution import new_session_id, validate_id
from ..errors import InvalidIdError

#: The process id ``memori mcp`` writes as unless ``--process`` says otherwise.
DEFAULT_PROCESS = "mcp"


class ScopeError(Exception):
    """A tool asked for something outside the server's scope (shown to the model)."""


@dataclasses.dataclass(frozen=True)
class Scope:
    """The entity a server reads and writes, the process and session it writes as, and
    whether a tool's ``entity`` argument may name another entity (``allow_entity_arg``: for
    a trusted host serving several people; off by default, when tools have no such argument).
    """

    entity: str
    process: str = DEFAULT_PROCESS
    allow_entity_arg: bool = False
    session: str = dataclasses.field(default_factory=new_session_id)

    def __post_init__(self) -> None:
        validate_id(self.entity, "entity")
        validate_id(self.process, "process")
        validate_id(self.session, "session")

    def entity_for(self, requested: str | None) -> str:
        """The entity a call works on: the server's, or with ``allow_entity_arg`` the one
        the call names. Without it a named entity other than the server's is refused (the
        tools then do not even offer the argument, so only a hand-made call gets here)."""
        if requested is None or requested == self.entity:
            return self.entity
        if not self.allow_entity_arg:
            raise ScopeError(
                f"this server serves entity {self.entity!r} only (start it with "
                "--allow-entity-arg to let tools name an entity)"
            )
        try:
            return validate_id(requested, "entity")
        except InvalidIdError as exc:
            raise ScopeError(str(exc)) from None
