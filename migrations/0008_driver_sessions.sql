-- Driver-side sessions (issue 6): sessions tied to an account, paying in the
-- lot before the exit (场内缴费; the exit window is lots.exit_window_minutes of
-- 0001), and a notification of
-- every change of what a plate owes, so the lanes' arrears flags follow a
-- payment at once.

-- The account a session belongs to when a driver's scan made it: an unplated
-- car let in by an entry lane code (plate NULL), or an on-street stay claimed
-- by a space code. Sessions the lanes made from a plate read leave it NULL
-- (the plate's holder is looked up when the session is billed).
ALTER TABLE sessions ADD COLUMN account_id text REFERENCES accounts (id);
UPDATE sessions SET account_id = substr(entry_device_id, 9)
 WHERE entry_device_id LIKE 'account:acc-%'
   AND substr(entry_device_id, 9) IN (SELECT id FROM accounts);
CREATE INDEX sessions_account_idx ON sessions (account_id, entry_at) WHERE account_id IS NOT NULL;
-- One unplated car per account at a time, city-wide (the account is the car).
CREATE UNIQUE INDEX sessions_one_open_unplated_per_account ON sessions (account_id)
    WHERE status = 'open' AND plate IS NULL AND account_id IS NOT NULL;

-- A session may now have several bills: payments made in the lot before the
-- exit (kind 'prepay', each the fee up to its quote less what earlier ones
-- billed), and at most one bill at the close (kind 'stay': the rest, if any).
ALTER TABLE bills ADD COLUMN kind text NOT NULL DEFAULT 'stay' CHECK (kind IN ('stay', 'prepay'));
ALTER TABLE bills DROP CONSTRAINT bills_session_unique;
CREATE UNIQUE INDEX bills_one_stay_bill_per_session ON bills (session_id) WHERE kind = 'stay';
CREATE INDEX bills_prepay_idx ON bills (session_id) WHERE kind = 'prepay';

-- What a plate owes changed (a bill opened, was paid, refunded, written off,
-- disputed): NOTIFY delivers at commit, so listeners (the gateway's flag
-- sync) never see a change that rolls back. Payload: the plate, or
-- "prepay:<session_id>" when a prepayment was paid (the gateway's exit
-- display). Listeners that miss a notification (not connected) are caught up
-- by their periodic full sync.
CREATE FUNCTION bills_notify_owed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.plate IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status
                                  OR OLD.paid_at IS DISTINCT FROM NEW.paid_at) THEN
        PERFORM pg_notify('parking_plate_owed', NEW.plate);
    END IF;
    IF NEW.kind = 'prepay' AND NEW.paid_at IS NOT NULL
       AND (TG_OP = 'INSERT' OR OLD.paid_at IS NULL) THEN
        PERFORM pg_notify('parking_plate_owed', 'prepay:' || NEW.session_id);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER bills_notify_owed AFTER INSERT OR UPDATE ON bills
    FOR EACH ROW EXECUTE FUNCTION bills_notify_owed();
