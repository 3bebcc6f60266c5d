
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    json TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    routed INTEGER NOT NULL DEFAULT 0,
    lease_until INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_unrouted ON events (routed, seq);
CREATE INDEX IF NOT EXISTS events_forgotten ON events (routed, received_at);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    caller TEXT NOT NULL,
    url TEXT NOT NULL,
    order_key TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at INTEGER NOT NULL,
    dead_at INTEGER,
    last_error TEXT NOT NULL DEFAULT '',
    event_seq INTEGER,
    reference TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (dead_at, due_at);
CREATE INDEX IF NOT EXISTS deliveries_order ON deliveries (order_key, seq);
CREATE TABLE IF NOT EXISTS owners (
    message_id TEXT PRIMARY KEY,
    caller TEXT NOT NULL,
    account TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    reference TEXT
);
CREATE INDEX IF NOT EXISTS owners_expiry ON owners (expires_at);
CREATE TABLE IF NOT EXISTS last_senders (
    account TEXT NOT NULL,
    customer TEXT NOT NULL,
    caller TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (account, customer)
);
CREATE INDEX IF NOT EXISTS last_senders_expiry ON last_senders (expires_at);
DROP TABLE IF EXISTS statuses;
CREATE TABLE IF NOT EXISTS latest_statuses (
    message_id TEXT PRIMARY KEY,
    rank INTEGER NOT NULL,
    status TEXT NOT NULL,
    event_seq INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS latest_statuses_expiry ON latest_statuses (updated_at);
CREATE INDEX IF NOT EXISTS latest_statuses_event ON latest_statuses (event_seq);
CREATE TABLE IF NOT EXISTS customer_windows (
    account TEXT NOT NULL,
    customer TEXT NOT NULL,
    last_inbound_at INTEGER NOT NULL,
    PRIMARY KEY (account, customer)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS customer_windows_age ON customer_windows (last_inbound_at);
CREATE TABLE IF NOT EXISTS watched_accounts (
    account TEXT PRIMARY KEY,
    since INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS opt_outs (
    account TEXT NOT NULL,
    customer TEXT NOT NULL,
    masked TEXT NOT NULL,
    opted_out INTEGER NOT NULL,
    how TEXT NOT NULL,
    changed_at INTEGER NOT NULL,
    PRIMARY KEY (account, customer)
) WITHOUT ROWID;
