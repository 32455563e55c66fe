-- Operator decisions move the money (issue 10, points 2 and 3).
--
-- A stay billed to a misread plate and already paid by that plate's
-- contactless mandate is refunded to that payer and billed again, to the
-- right plate: kind 'rebill' (any number per session; the stay bill stays
-- unique per session and keeps its history).
ALTER TABLE bills DROP CONSTRAINT bills_kind_check;
ALTER TABLE bills ADD CONSTRAINT bills_kind_check CHECK (kind IN ('stay', 'prepay', 'rebill'));

-- A bill that moves from a misread plate to the right one changes what both
-- plates owe: both are notified (the gateway's arrears flags follow).
CREATE OR REPLACE FUNCTION bills_notify_owed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.plate IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status
                                  OR OLD.paid_at IS DISTINCT FROM NEW.paid_at
                                  OR OLD.plate IS DISTINCT FROM NEW.plate) THEN
        PERFORM pg_notify('parking_plate_owed', NEW.plate);
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.plate IS NOT NULL AND OLD.plate IS DISTINCT FROM NEW.plate THEN
        PERFORM pg_notify('parking_plate_owed', OLD.plate);
    END IF;
    IF NEW.kind = 'prepay' AND NEW.paid_at IS NOT NULL
       AND (TG_OP = 'INSERT' OR OLD.paid_at IS NULL) THEN
        PERFORM pg_notify('parking_plate_owed', 'prepay:' || NEW.session_id);
    END IF;
    RETURN NULL;
END;
$$;
