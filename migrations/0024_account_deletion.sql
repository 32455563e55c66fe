-- A driver deletes their account (issue 19, PIPL erasure): the account stays as the
-- pseudonymous party of its financial records (bills, payments, ledger), without its
-- phone; its bindings, mandates and logins end. A deleted account never logs in again
-- (the phone, free again, makes a new account).
ALTER TABLE accounts DROP CONSTRAINT accounts_status_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_status_check
    CHECK (status IN ('active', 'suspended', 'deleted'));
ALTER TABLE accounts ALTER COLUMN phone DROP NOT NULL;
ALTER TABLE accounts ADD COLUMN deleted_at timestamptz;
ALTER TABLE accounts ADD CONSTRAINT accounts_deleted_check
    CHECK ((status = 'deleted') = (phone IS NULL) AND (status = 'deleted') = (deleted_at IS NOT NULL));

ALTER TABLE auth_sessions DROP CONSTRAINT auth_sessions_revoked_reason_check;
ALTER TABLE auth_sessions ADD CONSTRAINT auth_sessions_revoked_reason_check
    CHECK (revoked_reason IN ('logout', 'reuse', 'operator', 'account_deleted'));
