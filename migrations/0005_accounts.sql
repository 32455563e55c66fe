-- Driver accounts: phone login sessions, bound plates and claims on plates
-- (parking.accounts). One-time codes and the access-token denylist live in
-- Redis with a TTL, not here: they expire within minutes and need no history.

-- A driver, known by a mainland mobile number in E.164 form (+86 1xxxxxxxxxx).
-- The phone is the login: the first verified code creates the account.
CREATE TABLE accounts (
    id         text PRIMARY KEY CHECK (id ~ '^acc-[0-9A-HJKMNP-TV-Z]{26}$'),
    phone      text NOT NULL CHECK (phone ~ '^\+861[3-9][0-9]{9}$'),
    status     text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at timestamptz NOT NULL,
    CONSTRAINT accounts_phone_unique UNIQUE (phone)
);

-- One login on one device: a family of refresh tokens. Refreshing rotates the
-- token inside the family; presenting a token that was already rotated means
-- it was copied, and the whole family is revoked. expires_at bounds the
-- family however often it is refreshed.
CREATE TABLE auth_sessions (
    id             text PRIMARY KEY CHECK (id ~ '^as-[0-9A-HJKMNP-TV-Z]{26}$'),
    account_id     text NOT NULL REFERENCES accounts (id),
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    revoked_reason text CHECK (revoked_reason IN ('logout', 'reuse', 'operator')),
    CONSTRAINT auth_sessions_revocation_check CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL)),
    CONSTRAINT auth_sessions_period_check CHECK (expires_at > created_at)
);
CREATE INDEX auth_sessions_account_idx ON auth_sessions (account_id) WHERE revoked_at IS NULL;

-- Every refresh token issued, by its JWT id, with the access token issued
-- beside it: revoking a family denylists the access tokens still alive.
CREATE TABLE refresh_tokens (
    jti               text PRIMARY KEY CHECK (length(jti) BETWEEN 8 AND 64),
    session_id        text NOT NULL REFERENCES auth_sessions (id),
    issued_at         timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    -- set once, when the token is exchanged for the next one
    rotated_at        timestamptz,
    access_jti        text NOT NULL CHECK (length(access_jti) BETWEEN 8 AND 64),
    access_expires_at timestamptz NOT NULL,
    CONSTRAINT refresh_tokens_period_check CHECK (expires_at > issued_at)
);
CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id);
CREATE UNIQUE INDEX refresh_tokens_access_jti_idx ON refresh_tokens (access_jti);

-- A plate bound to an account. A binding is never edited back to life: an
-- unbind or a claim releases it, and binding again is a new row, so the table
-- is the plate's history of holders.
CREATE TABLE vehicles (
    id              text PRIMARY KEY CHECK (id ~ '^veh-[0-9A-HJKMNP-TV-Z]{26}$'),
    account_id      text NOT NULL REFERENCES accounts (id),
    -- normalised (parking.plates.parse_plate(...).text)
    plate           text NOT NULL CHECK (length(plate) BETWEEN 2 AND 16),
    bound_at        timestamptz NOT NULL,
    released_at     timestamptz,
    released_reason text CHECK (released_reason IN ('unbound', 'claimed')),
    CONSTRAINT vehicles_release_check CHECK ((released_at IS NULL) = (released_reason IS NULL))
);
-- A plate belongs to one account at a time.
CREATE UNIQUE INDEX vehicles_one_holder_per_plate ON vehicles (plate) WHERE released_at IS NULL;
CREATE INDEX vehicles_account_idx ON vehicles (account_id, bound_at) WHERE released_at IS NULL;

-- At most 5 live plates per account. The application checks first (for a
-- friendly error); this trigger is the backstop for concurrent binds, which it
-- serialises on the account row.
CREATE FUNCTION vehicles_check_per_account() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    live integer;
BEGIN
    IF NEW.released_at IS NOT NULL THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.released_at IS NULL AND OLD.account_id = NEW.account_id THEN
        RETURN NEW;
    END IF;
    PERFORM 1 FROM accounts WHERE id = NEW.account_id FOR UPDATE;
    SELECT count(*) INTO live FROM vehicles
     WHERE account_id = NEW.account_id AND released_at IS NULL AND id <> NEW.id;
    IF live >= 5 THEN
        RAISE EXCEPTION 'account % already has % plates bound; 5 is the most', NEW.account_id, live
            USING ERRCODE = 'check_violation', CONSTRAINT = 'vehicles_per_account_limit';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER vehicles_per_account_limit
    BEFORE INSERT OR UPDATE ON vehicles
    FOR EACH ROW EXECUTE FUNCTION vehicles_check_per_account();

-- A driver asking for a plate another account holds. The claimant gives
-- evidence (the 行驶证 registration certificate number or a reference to an
-- uploaded scan); an operator checks it and approves (the binding moves to the
-- claimant) or rejects. Decisions are audited in audit_log.
CREATE TABLE plate_claims (
    id                  text PRIMARY KEY CHECK (id ~ '^pc-[0-9A-HJKMNP-TV-Z]{26}$'),
    plate               text NOT NULL CHECK (length(plate) BETWEEN 2 AND 16),
    claimant_account_id text NOT NULL REFERENCES accounts (id),
    -- who held the plate when the claim was made
    holder_account_id   text REFERENCES accounts (id),
    evidence            text NOT NULL CHECK (length(evidence) BETWEEN 1 AND 500),
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'approved', 'rejected')),
    created_at          timestamptz NOT NULL,
    decided_at          timestamptz,
    decided_by          text,
    decision_note       text CHECK (length(decision_note) <= 500),
    CONSTRAINT plate_claims_decision_check CHECK (
        (status = 'pending') = (decided_at IS NULL AND decided_by IS NULL)
    )
);
-- One open claim per claimant and plate: a second is a 409, not a duplicate.
CREATE UNIQUE INDEX plate_claims_one_pending
    ON plate_claims (plate, claimant_account_id) WHERE status = 'pending';
CREATE INDEX plate_claims_status_idx ON plate_claims (status, id);
CREATE INDEX plate_claims_claimant_idx ON plate_claims (claimant_account_id, id);
