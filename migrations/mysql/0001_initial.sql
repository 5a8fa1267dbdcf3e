-- certkeeper's tables in MariaDB / MySQL. Applied once by
-- MySqlStore::connect / from_pool; never edit an applied migration: add the
-- next one. MySQL commits each DDL statement on its own, so every statement
-- here can run again (IF NOT EXISTS, INSERT IGNORE) after an interrupted run.
-- Names are ASCII with binary collation (byte order, case-sensitive); text
-- that is only stored and read back is utf8mb4; dates are DATETIME(6) in UTC.

-- Certificate records: the record as JSON text (its private key sealed,
-- base64 of ciphertext), with the columns `due` and compare-and-swap need.
-- `due` reads one ordered range of certkeeper_certificates_due per attempt
-- count, so exhausted counts are never read.
CREATE TABLE IF NOT EXISTS certkeeper_certificates (
    domain VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    version BIGINT NOT NULL,
    renew_date DATETIME(6) NOT NULL,
    attempts BIGINT NOT NULL,
    record MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    PRIMARY KEY (domain),
    KEY certkeeper_certificates_due (attempts, renew_date, domain, version)
) ENGINE = InnoDB;

-- ACME accounts: the record as JSON text (credentials sealed).
CREATE TABLE IF NOT EXISTS certkeeper_accounts (
    id VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    version BIGINT NOT NULL,
    record MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    PRIMARY KEY (id)
) ENGINE = InnoDB;

-- Settings (the main domain, the console's root seat ...).
CREATE TABLE IF NOT EXISTS certkeeper_meta (
    name VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    value MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    PRIMARY KEY (name)
) ENGINE = InnoDB;

-- Leases: one holder at a time until expires_at.
CREATE TABLE IF NOT EXISTS certkeeper_leases (
    name VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    holder VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    expires_at DATETIME(6) NOT NULL,
    PRIMARY KEY (name)
) ENGINE = InnoDB;

-- HTTP-01 answers, so that any instance can answer the CA.
CREATE TABLE IF NOT EXISTS certkeeper_challenges (
    token VARCHAR(256) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    key_authorization TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    expires_at DATETIME(6) NOT NULL,
    PRIMARY KEY (token),
    KEY certkeeper_challenges_expiry (expires_at)
) ENGINE = InnoDB;

-- The change feed: the last sequence number handed out (its row lock orders
-- the writers, so changes become visible in sequence order) ...
CREATE TABLE IF NOT EXISTS certkeeper_change_seq (
    id TINYINT NOT NULL,
    last_seq BIGINT NOT NULL,
    PRIMARY KEY (id)
) ENGINE = InnoDB;
INSERT IGNORE INTO certkeeper_change_seq (id, last_seq) VALUES (1, 0);

-- ... and the changes themselves, pruned from the oldest.
CREATE TABLE IF NOT EXISTS certkeeper_changes (
    seq BIGINT NOT NULL,
    domain VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    deleted BOOLEAN NOT NULL,
    changed_at DATETIME(6) NOT NULL,
    PRIMARY KEY (seq),
    KEY certkeeper_changes_age (changed_at)
) ENGINE = InnoDB;
