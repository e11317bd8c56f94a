"""The store's SQL schema, as versioned migrations (``PRAGMA user_version``)."""

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

# Index i brings user_version from i to i + 1. Append only; statements are split on ';'.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE usage (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        day TEXT NOT NULL,
        tenant TEXT NOT NULL,
        user TEXT NOT NULL,
        session TEXT,
        model TEXT NOT NULL,
        provider TEXT NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cached_input_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        estimated INTEGER NOT NULL,
        cost_usd REAL,
        priced INTEGER NOT NULL,
        latency_ms REAL NOT NULL,
        request_id TEXT,
        epoch TEXT NOT NULL
    );
    CREATE INDEX usage_tenant_day ON usage(tenant, day, user);
    CREATE INDEX usage_at ON usage(at);
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        user TEXT NOT NULL,
        conversation TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (tenant, user, conversation)
    );
    CREATE INDEX sessions_updated ON sessions(updated_at);
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        data BLOB NOT NULL
    );
    CREATE INDEX messages_session ON messages(session_id, id);
    CREATE TABLE session_archive (
        id INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        archived_at REAL NOT NULL,
        summary TEXT,
        messages BLOB NOT NULL
    );
    CREATE INDEX session_archive_session ON session_archive(session_id);
    CREATE TABLE checkpoints (
        key TEXT NOT NULL PRIMARY KEY,
        value BLOB NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE api_keys (
        key_hash TEXT NOT NULL PRIMARY KEY,
        tenant TEXT NOT NULL,
        scopes TEXT NOT NULL,
        name TEXT,
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        tenant TEXT NOT NULL,
        user TEXT NOT NULL,
        server TEXT NOT NULL,
        tool TEXT NOT NULL,
        arguments_hash TEXT NOT NULL,
        status TEXT NOT NULL,
        latency_ms REAL NOT NULL,
        request_id TEXT,
        error TEXT
    );
    CREATE INDEX audit_tenant_at ON audit(tenant, at);
    """,
    # 2: reasoning checkpoints (toolmesh.store.checkpoints): append-only rows per run.
    """
    CREATE TABLE run_checkpoints (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        version INTEGER NOT NULL,
        at REAL NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE INDEX run_checkpoints_at ON run_checkpoints(at);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
