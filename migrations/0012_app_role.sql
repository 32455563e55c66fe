-- The platform's processes connect as parking_app, which owns nothing: it
-- cannot ALTER a table, disable a trigger or TRUNCATE (those need ownership),
-- and on the append-only tables it may only INSERT and SELECT. The ledger's
-- protection then holds even against a bug or a stolen application password;
-- the append-only triggers remain for the owner's own console.
--
-- Roles are cluster-wide; privileges are per database, so a database cloned
-- from a migrated template keeps them. `parking stack up` creates the role
-- with a login and password; where no stack did, it is created here without
-- a login, for the operator of the cluster to give it one.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'parking_app') THEN
        CREATE ROLE parking_app NOLOGIN;
    END IF;
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO parking_app', current_database());
END
$$;

GRANT USAGE ON SCHEMA public TO parking_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO parking_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO parking_app;

-- Append-only: history is corrected by a reversing entry, never edited.
REVOKE UPDATE, DELETE ON
    ledger_accounts, ledger_transactions, ledger_postings, bill_events, payment_bills
    FROM parking_app;
-- Only migrations (as the owner) write their own bookkeeping.
REVOKE INSERT, UPDATE, DELETE ON schema_migrations FROM parking_app;

-- Tables and sequences that later migrations create (as this same owner) get
-- the ordinary grants; a later append-only table must REVOKE UPDATE, DELETE
-- like above (tests/integration/ledger/test_app_role.py checks every table
-- with an append-only trigger).
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO parking_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO parking_app;
