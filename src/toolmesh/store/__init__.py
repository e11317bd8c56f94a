"""The store (STO-1, STO-2): ledger, sessions, checkpoints, API keys and audit log on SQLite or PostgreSQL."""

from toolmesh.store.ledger import UsageLedger, UsageRecord
from toolmesh.store.limits import UserLimits
from toolmesh.store.sessions import Session, SessionStore, message_from_dict, message_to_dict
from toolmesh.store.sqlite import Store, default_path

__all__ = ["Session", "SessionStore", "Store", "UsageLedger", "UsageRecord", "UserLimits", "default_path",
           "message_from_dict", "message_to_dict"]
