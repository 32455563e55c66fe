-- Operator companies own lots (issue 10, point 8). An operator's token names
-- its company (the signed `company` claim); every operator route acts only on
-- the lots of that company (parking.companies is the one place that says so).

CREATE TABLE operator_companies (
    id text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- NULL: a lot no company owns yet (one made before companies existed, until
-- `parking seed` gives the seeded ones their owner). The city reads it; no
-- operator can change it, which is the safe side of not knowing.
ALTER TABLE lots ADD COLUMN company_id text REFERENCES operator_companies (id);
CREATE INDEX lots_company_idx ON lots (company_id, id);

-- NULL: one of the city's tariffs (the seeded 政府指导价 documents): every
-- company may assign it to its lots, none may version it, since a new version
-- would reprice every company's lots that use it.
ALTER TABLE tariffs ADD COLUMN company_id text REFERENCES operator_companies (id);

-- An exemption (a whitelisted plate, an exempt plate kind) is a company's: the
-- plate parks free at that company's lots only. NULL: one set before companies
-- existed, the city's, free at every lot and removed by no operator.
ALTER TABLE plate_exemptions ADD COLUMN company_id text REFERENCES operator_companies (id);
ALTER TABLE plate_exemptions DROP CONSTRAINT plate_exemptions_pkey;
ALTER TABLE plate_exemptions ADD CONSTRAINT plate_exemptions_company_plate_key
    UNIQUE NULLS NOT DISTINCT (company_id, plate);
ALTER TABLE exempt_plate_kinds ADD COLUMN company_id text REFERENCES operator_companies (id);
ALTER TABLE exempt_plate_kinds DROP CONSTRAINT exempt_plate_kinds_pkey;
ALTER TABLE exempt_plate_kinds ADD CONSTRAINT exempt_plate_kinds_company_kind_key
    UNIQUE NULLS NOT DISTINCT (company_id, kind);

-- The blacklist stays one list for the city (a listed plate is held at every
-- entry lane: a stolen or cloned plate is everyone's problem), but an entry is
-- the company's that listed it: only that company changes or lifts it. NULL:
-- listed before companies existed, lifted by any operator as before.
ALTER TABLE plate_blacklist ADD COLUMN company_id text REFERENCES operator_companies (id);
