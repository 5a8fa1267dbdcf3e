-- The CA's budgets (orders per account, failed validations per name),
-- shared by every instance: one row per budget with the times (unix
-- seconds, comma separated) units were taken inside its sliding window,
-- updated under the row's lock. Can run again after an interrupted run.
CREATE TABLE IF NOT EXISTS certkeeper_budgets (
    budget_key VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    taken MEDIUMTEXT CHARACTER SET ascii NOT NULL,
    PRIMARY KEY (budget_key)
) ENGINE = InnoDB;
