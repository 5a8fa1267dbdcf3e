-- The CA's budgets (orders per account, failed validations per name),
-- shared by every instance: one row per budget with the times (unix
-- seconds, comma separated) units were taken inside its sliding window,
-- updated under the row's lock.
CREATE TABLE certkeeper_budgets (
    budget_key TEXT COLLATE "C" PRIMARY KEY,
    taken TEXT NOT NULL
);
