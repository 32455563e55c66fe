-- A payment made in the phone's browser (issue 14): the page a scanned code opens
-- hands the driver over to the provider's cashier (WeChat H5, trade type MWEB)
-- and gets them back to a receipt. Such an attempt behaves as a QR-code one
-- ('native'): the payer pays it or it expires; code_url holds the cashier's
-- address instead of the QR code's content.
ALTER TABLE payment_attempts DROP CONSTRAINT payment_attempts_kind_check;
ALTER TABLE payment_attempts ADD CONSTRAINT payment_attempts_kind_check
    CHECK (kind IN ('native', 'h5', 'contactless'));
