-- A plate is not a location (issue 10, point 7). Binding a plate proves
-- nothing: anyone may type any plate. A binding starts unverified and becomes
-- verified by an approved claim with the vehicle licence (行驶证) photo, or when
-- a payment provider confirms the plate (the contactless mandate's plate
-- authorisation). Only a verified holder sees where the car is and was
-- (parking.accounts.service.my_plates is the one rule).

ALTER TABLE vehicles
    ADD COLUMN verified_at timestamptz,
    -- 'claim:<plate claim id>' or 'provider:<provider name>'
    ADD COLUMN verified_by text CHECK (verified_by ~ '^(claim:pc-[0-9A-HJKMNP-TV-Z]{26}|provider:[a-z][a-z0-9_-]{0,31})$'),
    ADD CONSTRAINT vehicles_verification_check CHECK ((verified_at IS NULL) = (verified_by IS NULL));
-- Bindings made before this rule existed stay unverified (nothing says who made
-- them, and that is exactly the attack this closes), except where a provider
-- already confirmed the plate for the same account: a live contactless mandate.
UPDATE vehicles v
   SET verified_at = m.updated_at, verified_by = 'provider:' || m.provider
  FROM contactless_mandates m
 WHERE v.released_at IS NULL AND m.plate = v.plate AND m.account_id = v.account_id
   AND m.state = 'active' AND m.provider ~ '^[a-z][a-z0-9_-]{0,31}$';

-- The reference of the uploaded 行驶证 photo. Claims made before this rule have
-- none; the application requires one on every new claim.
ALTER TABLE plate_claims
    ADD COLUMN photo_ref text CHECK (photo_ref ~ '^[\x21-\x7e]{1,200}$');

-- A prepay bill is an offer until the exit: unpaid, it changes nothing a plate
-- owes (parking.bills counts it as arrears only after its session closed), so
-- its creation notifies nobody; its payment still does ('prepay:<session>').
-- A bill moved to another plate (0010) still notifies both plates.
CREATE OR REPLACE FUNCTION bills_notify_owed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.plate IS NOT NULL AND NOT (TG_OP = 'INSERT' AND NEW.kind = 'prepay')
       AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status
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
