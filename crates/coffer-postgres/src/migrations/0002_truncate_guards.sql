-- TRUNCATE fires no row trigger: the append-only tables refuse it with a statement trigger.
-- (Triggers guard against mistakes, not against a role that owns the tables: such a role can
-- drop them. See docs/storage-format.md for a separate owner role.)
CREATE TRIGGER changes_no_truncate BEFORE TRUNCATE ON changes
    FOR EACH STATEMENT EXECUTE FUNCTION coffer_refuse('the change log is append-only');
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION coffer_refuse('the audit log is append-only');
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION coffer_refuse('audit checkpoints are append-only');
