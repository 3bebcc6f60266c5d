-- A forgotten body (it holds the customer's number) is overwritten in the file, not only unlinked.
PRAGMA secure_delete = ON;
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    caller TEXT NOT NULL,
    account TEXT NOT NULL,
    body TEXT,
    reference TEXT,
    key_sha256 TEXT,
    fingerprint TEXT,
    state TEXT NOT NULL,
    send_at INTEGER,
    due_at INTEGER NOT NULL,
    valid_until INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    qikchat_id TEXT,
    error_code TEXT,
    error_detail TEXT,
    token TEXT,
    lease_until INTEGER NOT NULL DEFAULT 0,
    accepted_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_key ON messages (caller, key_sha256)
    WHERE key_sha256 IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_due ON messages (state, caller, due_at);
CREATE INDEX IF NOT EXISTS messages_lease ON messages (state, lease_until);
CREATE INDEX IF NOT EXISTS messages_ended ON messages (updated_at);
