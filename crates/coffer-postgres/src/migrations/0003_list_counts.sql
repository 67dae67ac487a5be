-- Lists flat in the store's size (docs/benchmarks.md, "Lists").
--
-- stores.secret_count: the store's secret count, kept by the triggers below in the statement
-- that inserts or deletes its secrets, so an unfiltered list's total_count is one row, not a
-- count of the store. Filled here for existing stores (the migration holds the migration and
-- writer locks: no write interleaves).
ALTER TABLE stores ADD COLUMN secret_count BIGINT NOT NULL DEFAULT 0 CHECK (secret_count >= 0);
UPDATE stores SET secret_count = c.n
FROM (SELECT store_id, count(*) AS n FROM secrets GROUP BY store_id) AS c
WHERE stores.id = c.store_id;

-- The counters move once per statement, by the statement's rows per account and per store
-- (transition tables), instead of once per row: every update of one row in one transaction
-- leaves a version the next must step over, so a bulk create of n secrets in one statement
-- (or a group commit of several) cost O(n^2) with a row trigger (4,000 inserts in one
-- transaction: 0.27 s without a counter, 0.75 s counting the account, 2.4 s counting the
-- account and the store per row).
DROP TRIGGER secrets_count ON secrets;
DROP FUNCTION coffer_secrets_count();

CREATE FUNCTION coffer_secrets_count_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE accounts SET secret_count = accounts.secret_count + c.n
    FROM (SELECT account_id, count(*) AS n FROM inserted GROUP BY account_id) AS c
    WHERE accounts.id = c.account_id;
    UPDATE stores SET secret_count = stores.secret_count + c.n
    FROM (SELECT store_id, count(*) AS n FROM inserted GROUP BY store_id) AS c
    WHERE stores.id = c.store_id;
    RETURN NULL;
END $$;
CREATE TRIGGER secrets_count_insert AFTER INSERT ON secrets
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION coffer_secrets_count_insert();

CREATE FUNCTION coffer_secrets_count_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE accounts SET secret_count = accounts.secret_count - c.n
    FROM (SELECT account_id, count(*) AS n FROM deleted GROUP BY account_id) AS c
    WHERE accounts.id = c.account_id;
    UPDATE stores SET secret_count = stores.secret_count - c.n
    FROM (SELECT store_id, count(*) AS n FROM deleted GROUP BY store_id) AS c
    WHERE stores.id = c.store_id;
    RETURN NULL;
END $$;
CREATE TRIGGER secrets_count_delete AFTER DELETE ON secrets
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION coffer_secrets_count_delete();

-- TRUNCATE fires neither: it would leave the counters behind, so it is refused.
CREATE TRIGGER secrets_no_truncate BEFORE TRUNCATE ON secrets
    FOR EACH STATEMENT EXECUTE FUNCTION coffer_refuse('secrets are deleted row by row, so the counts follow');

-- Each order of list_secrets reads its page's ids off an index with the id in it (an
-- index-only walk for the rows skipped): names are unique per store, so no tie-break, but
-- secrets_name_unique holds no id.
CREATE INDEX secrets_by_name ON secrets (store_id, name) INCLUDE (id);
