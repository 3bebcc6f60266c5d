
UPDATE events SET bytes = length(CAST(json AS BLOB)) WHERE bytes = 0;
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_seq);
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    bytes INTEGER NOT NULL
);
INSERT OR IGNORE INTO usage (id, bytes) VALUES (1, (SELECT total(bytes) FROM events));
CREATE TRIGGER IF NOT EXISTS usage_on_insert AFTER INSERT ON events
BEGIN UPDATE usage SET bytes = bytes + NEW.bytes WHERE id = 1; END;
CREATE TRIGGER IF NOT EXISTS usage_on_delete AFTER DELETE ON events
BEGIN UPDATE usage SET bytes = bytes - OLD.bytes WHERE id = 1; END;
CREATE TRIGGER IF NOT EXISTS usage_on_update AFTER UPDATE OF bytes ON events
BEGIN UPDATE usage SET bytes = bytes - OLD.bytes + NEW.bytes WHERE id = 1; END;
