-- A lot's street address (issue 14): the page a scanned code opens says where the
-- driver is, and open data says where to go. Optional: a lot registered before
-- this has none until its operator gives it.
ALTER TABLE lots ADD COLUMN address text
    CHECK (address IS NULL OR length(address) BETWEEN 1 AND 200);
