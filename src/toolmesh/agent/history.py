"""Where a conversation's history lives between runs (AGT-6).

:class:`MemoryHistory` keeps it in process; :class:`StoreHistory` persists it in the
SQLite session store (the default for the CLI and the gateway). A run without a
conversation id is stateless: nothing is loaded or saved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from toolmesh.llm.types import Message

if TYPE_CHECKING:
    from toolmesh.store.sessions import SessionStore

__all__ = ["History", "MemoryHistory", "StoreHistory"]


class History(Protocol):
    """Where a run loads a conversation's messages and saves the new ones."""

    async def load(self, tenant: str, user: str, conversation: str | None) -> list[Message]: ...

    async def save(self, tenant: str, user: str, conversation: str | None, new: list[Message]) -> None: ...

    async def replace(self, tenant: str, user: str, conversation: str | None, messages: list[Message],
                      summary: str | None = None) -> None: ...


class MemoryHistory:
    """In-process history, keyed strictly by (tenant, user, conversation)."""

    def __init__(self, max_conversations: int = 10_000) -> None:
        self._data: dict[tuple[str, str, str], list[Message]] = {}
        self.max_conversations = max_conversations

    async def load(self, tenant: str, user: str, conversation: str | None) -> list[Message]:
        if conversation is None:
            return []
        return list(self._data.get((tenant, user, conversation), ()))

    async def save(self, tenant: str, user: str, conversation: str | None, new: list[Message]) -> None:
        if conversation is None:
            return
        key = (tenant, user, conversation)
        if key not in self._data and len(self._data) >= self.max_conversations:
            self._data.pop(next(iter(self._data)))  # oldest first (dict order)
        self._data.setdefault(key, []).extend(new)

    async def replace(self, tenant: str, user: str, conversation: str | None, messages: list[Message],
                      summary: str | None = None) -> None:
        if conversation is not None:
            self._data[(tenant, user, conversation)] = list(messages)


class StoreHistory:
    """History persisted in :class:`toolmesh.store.sessions.SessionStore`."""

    def __init__(self, sessions: SessionStore) -> None:
        self.sessions = sessions

    async def load(self, tenant: str, user: str, conversation: str | None) -> list[Message]:
        if conversation is None:
            return []
        session = await self.sessions.get(tenant, user, conversation)
        return list(session.messages)

    async def save(self, tenant: str, user: str, conversation: str | None, new: list[Message]) -> None:
        if conversation is None or not new:
            return
        session = await self.sessions.get(tenant, user, conversation)
        await self.sessions.append(session, new)

    async def replace(self, tenant: str, user: str, conversation: str | None, messages: list[Message],
                      summary: str | None = None) -> None:
        if conversation is None:
            return
        session = await self.sessions.get(tenant, user, conversation)
        await self.sessions.replace_history(session, messages, archived_summary=summary)
