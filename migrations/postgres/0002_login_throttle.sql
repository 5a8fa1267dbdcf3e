-- The console's login throttle, shared by every instance: one fixed window
-- per key (a hashed email or an address), counted with one statement per
-- hit. Expired windows are pruned as hits come in.
CREATE TABLE certkeeper_login_throttle (
    key TEXT COLLATE "C" PRIMARY KEY,
    count BIGINT NOT NULL,
    resets_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX certkeeper_login_throttle_expiry ON certkeeper_login_throttle (resets_at);
