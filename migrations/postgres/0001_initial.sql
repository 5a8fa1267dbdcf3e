-- certkeeper's tables in PostgreSQL. Applied once, in one transaction, by
-- PostgresStore::connect / from_pool; never edit an applied migration: add
-- the next one.

-- Certificate records: the record as JSON text (its private key sealed,
-- base64 of ciphertext), with the columns `due` and compare-and-swap need.
CREATE TABLE certkeeper_certificates (
    domain TEXT COLLATE "C" PRIMARY KEY,
    version BIGINT NOT NULL CHECK (version > 0),
    renew_date TIMESTAMPTZ NOT NULL,
    attempts BIGINT NOT NULL CHECK (attempts >= 0),
    record TEXT NOT NULL
);

-- `due`: one ordered range per attempt count, exhausted counts never read.
CREATE INDEX certkeeper_certificates_due
    ON certkeeper_certificates (attempts, renew_date, domain) INCLUDE (version);

-- ACME accounts: the record as JSON text (credentials sealed).
CREATE TABLE certkeeper_accounts (
    id TEXT COLLATE "C" PRIMARY KEY,
    version BIGINT NOT NULL CHECK (version > 0),
    record TEXT NOT NULL
);

-- Settings (the main domain, the console's root seat ...).
CREATE TABLE certkeeper_meta (
    name TEXT COLLATE "C" PRIMARY KEY,
    value TEXT NOT NULL
);

-- Leases: one holder at a time until expires_at.
CREATE TABLE certkeeper_leases (
    name TEXT COLLATE "C" PRIMARY KEY,
    holder TEXT COLLATE "C" NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

-- HTTP-01 answers, so that any instance can answer the CA.
CREATE TABLE certkeeper_challenges (
    token TEXT COLLATE "C" PRIMARY KEY,
    key_authorization TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX certkeeper_challenges_expiry ON certkeeper_challenges (expires_at);

-- The change feed: the last sequence number handed out (its row lock orders
-- the writers, so changes become visible in sequence order) ...
CREATE TABLE certkeeper_change_seq (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    last_seq BIGINT NOT NULL
);
INSERT INTO certkeeper_change_seq (id, last_seq) VALUES (1, 0);

-- ... and the changes themselves, pruned from the oldest.
CREATE TABLE certkeeper_changes (
    seq BIGINT PRIMARY KEY,
    domain TEXT COLLATE "C" NOT NULL,
    deleted BOOLEAN NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX certkeeper_changes_age ON certkeeper_changes (changed_at);
