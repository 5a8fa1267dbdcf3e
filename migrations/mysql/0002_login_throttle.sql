-- The console's login throttle, shared by every instance: one fixed window
-- per key (a hashed email or an address), counted with one upsert per hit.
-- Expired windows are pruned as hits come in. Can run again after an
-- interrupted run.
CREATE TABLE IF NOT EXISTS certkeeper_login_throttle (
    throttle_key VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    count BIGINT NOT NULL,
    resets_at DATETIME(6) NOT NULL,
    PRIMARY KEY (throttle_key),
    KEY certkeeper_login_throttle_expiry (resets_at)
) ENGINE = InnoDB;
