CREATE FUNCTION public.append_only_refuse() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_TABLE_NAME LIKE 'audit_log%' THEN
        RAISE EXCEPTION '% on % refused: the audit log is append-only', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'record what changed as a new audit entry';
    END IF;
    RAISE EXCEPTION '% on % refused: the table is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'correct the ledger with a reversing transaction';
END;
$$;
CREATE FUNCTION public.audit_append(p_at timestamp with time zone, p_actor text, p_role text, p_action text, p_target text, p_details jsonb) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM ensure_month_partition('audit_log', (p_at AT TIME ZONE 'UTC')::date);
    INSERT INTO audit_log (at, actor, role, action, target, details)
    VALUES (p_at, p_actor, p_role, p_action, p_target, p_details);
END
$$;
CREATE FUNCTION public.bills_notify_owed() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
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
CREATE FUNCTION public.ensure_event_partitions(month date) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM ensure_month_partition('passages', month);
    PERFORM ensure_month_partition('space_events', month);
END
$$;
CREATE FUNCTION public.ensure_month_partition(parent text, month date) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
DECLARE
    first date := date_trunc('month', month)::date;
    name text := parent || '_' || to_char(first, 'YYYY_MM');
    low text;
    high text;
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN;
    END IF;
    -- Two writers may race here; the lock makes the check-then-create atomic.
    PERFORM pg_advisory_xact_lock(hashtext(name));
    IF to_regclass(name) IS NOT NULL THEN
        RETURN;
    END IF;
    IF parent = 'sessions' THEN
        low := session_id_floor(first);
        high := session_id_floor((first + interval '1 month')::date);
    ELSIF parent IN ('passages', 'space_events', 'audit_log') THEN
        -- month boundaries in UTC, whatever the session's TimeZone
        low := to_char(first, 'YYYY-MM-DD') || ' 00:00:00+00';
        high := to_char(first + interval '1 month', 'YYYY-MM-DD') || ' 00:00:00+00';
    ELSE
        RAISE EXCEPTION '% has no monthly partitions', parent;
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                   name, parent, low, high);
    IF parent = 'audit_log' THEN
        -- append-only through the partition's own name too
        EXECUTE format('REVOKE UPDATE, DELETE ON %I FROM parking_app', name);
    END IF;
END
$$;
CREATE FUNCTION public.ensure_session_partitions(ids text[]) RETURNS void
    LANGUAGE plpgsql
    AS $_$
DECLARE
    m date;
BEGIN
    FOR m IN
        SELECT DISTINCT session_id_month(p || '0000000000000000000')
          FROM (SELECT DISTINCT left(i, 9) AS p FROM unnest(ids) AS i
                 WHERE i ~ '^s-[0-9A-HJKMNP-TV-Z]{26}$') AS prefixes
    LOOP
        PERFORM ensure_month_partition('sessions', m);
    END LOOP;
END
$_$;
CREATE FUNCTION public.ledger_check_balanced() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    tx_id      text;
    n_postings integer;
    bad        record;
BEGIN
    IF TG_TABLE_NAME = 'ledger_transactions' THEN
        tx_id := NEW.id;
    ELSE
        tx_id := NEW.transaction_id;
    END IF;
    SELECT count(*) INTO n_postings FROM ledger_postings WHERE transaction_id = tx_id;
    IF n_postings < 2 THEN
        RAISE EXCEPTION 'ledger transaction % has % posting(s); double entry needs at least two',
            tx_id, n_postings
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_balanced';
    END IF;
    SELECT currency, sum(amount_fen) AS total INTO bad
      FROM ledger_postings WHERE transaction_id = tx_id
     GROUP BY currency HAVING sum(amount_fen) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % does not balance: its % postings sum to % fen',
            tx_id, bad.currency, bad.total
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_balanced';
    END IF;
    RETURN NULL;
END;
$$;
CREATE FUNCTION public.payment_attempt_check_shares() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    a_id   text;
    amount bigint;
    shares bigint;
BEGIN
    IF TG_TABLE_NAME = 'payment_attempts' THEN
        a_id := NEW.id;
    ELSE
        a_id := NEW.attempt_id;
    END IF;
    SELECT a.amount_fen INTO amount FROM payment_attempts a WHERE a.id = a_id;
    SELECT coalesce(sum(b.amount_fen), 0) INTO shares FROM payment_bills b WHERE b.attempt_id = a_id;
    IF shares <> amount THEN
        RAISE EXCEPTION 'payment attempt % is % fen but its bills add up to % fen',
            a_id, amount, shares
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payment_attempt_shares';
    END IF;
    RETURN NULL;
END;
$$;
CREATE FUNCTION public.rollups_mark_bills() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO rollup_changes (hour)
    SELECT DISTINCT h FROM (
        SELECT date_trunc('hour', created_at, 'UTC') AS h FROM new_rows
        UNION SELECT date_trunc('hour', paid_at, 'UTC') FROM new_rows WHERE paid_at IS NOT NULL
        UNION SELECT date_trunc('hour', closed_at, 'UTC') FROM new_rows
        UNION SELECT date_trunc('hour', closed_at, 'UTC') + interval '1 hour' FROM new_rows
    ) AS touched;
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO rollup_changes (hour)
        SELECT DISTINCT date_trunc('hour', paid_at, 'UTC') FROM old_rows WHERE paid_at IS NOT NULL;
    END IF;
    RETURN NULL;
END;
$$;
CREATE FUNCTION public.rollups_mark_disputes() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO rollup_changes (hour)
    SELECT DISTINCT date_trunc('hour', opened_at, 'UTC') FROM new_rows;
    RETURN NULL;
END;
$$;
CREATE FUNCTION public.rollups_mark_sessions() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO rollup_changes (hour)
    SELECT DISTINCT h FROM (
        SELECT date_trunc('hour', entry_at, 'UTC') AS h FROM new_rows WHERE entry_at IS NOT NULL
        UNION SELECT date_trunc('hour', exit_at, 'UTC') FROM new_rows WHERE exit_at IS NOT NULL
    ) AS touched;
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO rollup_changes (hour)
        SELECT DISTINCT h FROM (
            SELECT date_trunc('hour', entry_at, 'UTC') AS h FROM old_rows WHERE entry_at IS NOT NULL
            UNION SELECT date_trunc('hour', exit_at, 'UTC') FROM old_rows WHERE exit_at IS NOT NULL
        ) AS touched;
    END IF;
    RETURN NULL;
END;
$$;
CREATE FUNCTION public.session_id_floor(month date) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    AS $$
DECLARE
    ms bigint := (extract(epoch FROM (date_trunc('month', month::timestamp) AT TIME ZONE 'UTC'))
                  * 1000)::bigint;
    out text := '';
BEGIN
    FOR i IN 1..10 LOOP
        out := substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (ms % 32)::int + 1, 1) || out;
        ms := ms / 32;
    END LOOP;
    RETURN 's-' || out;
END
$$;
CREATE FUNCTION public.session_id_month(id text) RETURNS date
    LANGUAGE plpgsql IMMUTABLE
    AS $_$
DECLARE
    ms bigint := 0;
BEGIN
    IF id !~ '^s-[0-9A-HJKMNP-TV-Z]{26}$' THEN
        RETURN NULL;
    END IF;
    FOR i IN 3..12 LOOP
        ms := ms * 32 + strpos('0123456789ABCDEFGHJKMNPQRSTVWXYZ', substr(id, i, 1)) - 1;
    END LOOP;
    RETURN date_trunc('month', to_timestamp(ms / 1000.0) AT TIME ZONE 'UTC')::date;
END
$_$;
CREATE FUNCTION public.session_status_rank(status text) RETURNS integer
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT array_position(ARRAY['open', 'superseded', 'closed', 'voided'], status)
$$;
CREATE FUNCTION public.sessions_track_open() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO sessions_open (id, lot_id, plate, account_id)
        VALUES (NEW.id, NEW.lot_id, NEW.plate, NEW.account_id);
    ELSIF TG_OP = 'DELETE' OR NEW.status <> 'open' THEN
        DELETE FROM sessions_open WHERE id = OLD.id;
    ELSIF OLD.status <> 'open' THEN
        INSERT INTO sessions_open (id, lot_id, plate, account_id)
        VALUES (NEW.id, NEW.lot_id, NEW.plate, NEW.account_id);
    ELSE
        UPDATE sessions_open SET lot_id = NEW.lot_id, plate = NEW.plate,
                                 account_id = NEW.account_id
         WHERE id = NEW.id;
    END IF;
    RETURN NULL;
END
$$;
CREATE FUNCTION public.vehicles_check_per_account() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
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
CREATE TABLE public.accounts (
    id text NOT NULL,
    phone text,
    status text DEFAULT 'active'::text NOT NULL,
    created_at timestamp with time zone NOT NULL,
    deleted_at timestamp with time zone,
    CONSTRAINT accounts_deleted_check CHECK ((((status = 'deleted'::text) = (phone IS NULL)) AND ((status = 'deleted'::text) = (deleted_at IS NOT NULL)))),
    CONSTRAINT accounts_id_check CHECK ((id ~ '^acc-[0-9A-HJKMNP-TV-Z]{26}$'::text)),
    CONSTRAINT accounts_phone_check CHECK ((phone ~ '^\+861[3-9][0-9]{9}$'::text)),
    CONSTRAINT accounts_status_check CHECK ((status = ANY (ARRAY['active'::text, 'suspended'::text, 'deleted'::text])))
);
CREATE TABLE public.anomalies (
    id text NOT NULL,
    kind text NOT NULL,
    lot_id text,
    device_id text,
    plate text,
    session_id text,
    image_ref text,
    details jsonb DEFAULT '{}'::jsonb NOT NULL,
    status text DEFAULT 'open'::text NOT NULL,
    created_at timestamp with time zone NOT NULL,
    resolved_at timestamp with time zone,
    resolution text,
    CONSTRAINT anomalies_resolved_has_time CHECK (((status = 'resolved'::text) = (resolved_at IS NOT NULL))),
    CONSTRAINT anomalies_status_check CHECK ((status = ANY (ARRAY['open'::text, 'resolved'::text])))
);
CREATE TABLE public.audit_log (
    id bigint NOT NULL,
    at timestamp with time zone NOT NULL,
    actor text NOT NULL,
    role text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    details jsonb DEFAULT '{}'::jsonb NOT NULL
)
PARTITION BY RANGE (at);
CREATE SEQUENCE public.audit_log_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.audit_log_id_seq OWNED BY public.audit_log.id;
CREATE TABLE public.auth_sessions (
    id text NOT NULL,
    account_id text NOT NULL,
    created_at timestamp with time zone NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    revoked_at timestamp with time zone,
    revoked_reason text,
    CONSTRAINT auth_sessions_id_check CHECK ((id ~ '^as-[0-9A-HJKMNP-TV-Z]{26}$'::text)),
    CONSTRAINT auth_sessions_period_check CHECK ((expires_at > created_at)),
    CONSTRAINT auth_sessions_revocation_check CHECK (((revoked_at IS NULL) = (revoked_reason IS NULL))),
    CONSTRAINT auth_sessions_revoked_reason_check CHECK ((revoked_reason = ANY (ARRAY['logout'::text, 'reuse'::text, 'operator'::text, 'account_deleted'::text])))
);
CREATE TABLE public.bill_events (
    id bigint NOT NULL,
    bill_id text NOT NULL,
    at timestamp with time zone NOT NULL,
    from_status text,
    to_status text NOT NULL,
    actor text NOT NULL,
    remark text DEFAULT ''::text NOT NULL,
    amount_fen bigint,
    ledger_transaction_id text,
    CONSTRAINT bill_events_actor_check CHECK (((length(actor) >= 1) AND (length(actor) <= 200))),
    CONSTRAINT bill_events_remark_check CHECK ((length(remark) <= 2000))
);
ALTER TABLE public.bill_events ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.bill_events_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);
CREATE TABLE public.bills (
    id text NOT NULL,
    session_id text NOT NULL,
    lot_id text NOT NULL,
    plate text,
    account_id text,
    amount_fen bigint NOT NULL,
    refunded_fen bigint DEFAULT 0 NOT NULL,
    tariff_id text NOT NULL,
    tariff_version integer NOT NULL,
    quote jsonb NOT NULL,
    status text DEFAULT 'open'::text NOT NULL,
    provider text,
    payment_ref text,
    paid_at timestamp with time zone,
    closed_at timestamp with time zone NOT NULL,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    kind text DEFAULT 'stay'::text NOT NULL,
    CONSTRAINT bills_account_id_check CHECK (((length(account_id) >= 1) AND (length(account_id) <= 64))),
    CONSTRAINT bills_amount_fen_check CHECK ((amount_fen > 0)),
    CONSTRAINT bills_id_check CHECK ((id ~ '^b-[0-9A-HJKMNP-TV-Z]{26}$'::text)),
    CONSTRAINT bills_kind_check CHECK ((kind = ANY (ARRAY['stay'::text, 'prepay'::text, 'rebill'::text]))),
    CONSTRAINT bills_payment_complete CHECK ((((paid_at IS NULL) AND (provider IS NULL) AND (payment_ref IS NULL)) OR ((paid_at IS NOT NULL) AND (provider IS NOT NULL) AND (payment_ref IS NOT NULL)))),
    CONSTRAINT bills_plate_check CHECK (((length(plate) >= 1) AND (length(plate) <= 16))),
    CONSTRAINT bills_quote_check CHECK ((jsonb_typeof(quote) = 'object'::text)),
    CONSTRAINT bills_refund_needs_payment CHECK (((refunded_fen = 0) OR (paid_at IS NOT NULL))),
    CONSTRAINT bills_refund_within_amount CHECK (((refunded_fen >= 0) AND (refunded_fen <= amount_fen))),
    CONSTRAINT bills_session_id_check CHECK (((length(session_id) >= 1) AND (length(session_id) <= 64))),
    CONSTRAINT bills_status_check CHECK ((status = ANY (ARRAY['open'::text, 'paying'::text, 'paid'::text, 'refunded'::text, 'written_off'::text, 'disputed'::text]))),
    CONSTRAINT bills_status_matches_money CHECK (
CASE status
    WHEN 'open'::text THEN (paid_at IS NULL)
    WHEN 'paying'::text THEN (paid_at IS NULL)
    WHEN 'written_off'::text THEN (paid_at IS NULL)
    WHEN 'paid'::text THEN ((paid_at IS NOT NULL) AND (refunded_fen = 0))
    WHEN 'refunded'::text THEN ((paid_at IS NOT NULL) AND (refunded_fen > 0))
    ELSE true
END)
);
CREATE TABLE public.calendars (
    version text NOT NULL,
    name text NOT NULL,
    years integer[] NOT NULL,
    document jsonb NOT NULL,
    created_by text NOT NULL,
    created_at timestamp with time zone NOT NULL,
    seq bigint NOT NULL,
    CONSTRAINT calendars_created_by_check CHECK (((length(created_by) >= 1) AND (length(created_by) <= 64))),
    CONSTRAINT calendars_name_check CHECK (((length(name) >= 1) AND (length(name) <= 200))),
    CONSTRAINT calendars_version_check CHECK ((version ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'::text)),
    CONSTRAINT calendars_years_check CHECK ((cardinality(years) >= 1))
);
ALTER TABLE public.calendars ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.calendars_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);
CREATE TABLE public.camera_pushes (
    device_id text NOT NULL,
    push_key text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    passage bytea NOT NULL,
    vendor_record bytea NOT NULL,
    images text[] DEFAULT '{}'::text[] NOT NULL,
    CONSTRAINT camera_pushes_passage_check CHECK ((length(passage) <= 8192)),
    CONSTRAINT camera_pushes_push_key_check CHECK ((push_key ~ '^[!-~]{1,200}$'::text)),
    CONSTRAINT camera_pushes_seq_check CHECK ((seq >= 1))
);
CREATE TABLE public.camera_seqs (
    device_id text NOT NULL,
    last_seq bigint DEFAULT 0 NOT NULL,
    CONSTRAINT camera_seqs_last_seq_check CHECK ((last_seq >= 0))
);
CREATE TABLE public.case_events (
    id bigint NOT NULL,
    case_id text NOT NULL,
    at timestamp with time zone NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    from_state text,
    to_state text NOT NULL,
    level text NOT NULL,
    holder text NOT NULL,
    note text
);
ALTER TABLE public.case_events ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.case_events_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);
CREATE TABLE public.case_full_lots (
    lot_id text NOT NULL,
    full_since timestamp with time zone NOT NULL
);
CREATE TABLE public.case_notifications (
    id bigint NOT NULL,
    case_id text NOT NULL,
    at timestamp with time zone NOT NULL,
    recipient text NOT NULL,
    kind text NOT NULL,
    message text NOT NULL,
    delivery text DEFAULT 'pending'::text NOT NULL,
    channels text[] DEFAULT '{}'::text[] NOT NULL,
    sent text[] DEFAULT '{}'::text[] NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    last_attempt_at timestamp with time zone,
    next_attempt_at timestamp with time zone,
    last_error text,
    delivered_at timestamp with time zone,
    CONSTRAINT case_notifications_attempts_check CHECK ((attempts >= 0)),
    CONSTRAINT case_notifications_delivered_check CHECK (((delivery = 'delivered'::text) = (delivered_at IS NOT NULL))),
    CONSTRAINT case_notifications_delivery_check CHECK ((delivery = ANY (ARRAY['pending'::text, 'delivered'::text, 'no_address'::text, 'failed'::text, 'stale'::text]))),
    CONSTRAINT case_notifications_last_error_check CHECK ((length(last_error) <= 500)),
    CONSTRAINT case_notifications_next_attempt_check CHECK (((delivery = 'pending'::text) OR (next_attempt_at IS NULL)))
);
ALTER TABLE public.case_notifications ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.case_notifications_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);
CREATE TABLE public.case_photos (
    case_id text NOT NULL,
    ref text NOT NULL,
    content_type text NOT NULL,
    bytes integer NOT NULL,
    kind text NOT NULL,
    added_by text NOT NULL,
    at timestamp with time zone NOT NULL,
    CONSTRAINT case_photos_bytes_check CHECK ((bytes > 0)),
    CONSTRAINT case_photos_content_type_check CHECK ((content_type = ANY (ARRAY['image/jpeg'::text, 'image/png'::text, 'image/webp'::text]))),
    CONSTRAINT case_photos_kind_check CHECK ((kind = ANY (ARRAY['report'::text, 'resolution'::text]))),
    CONSTRAINT case_photos_ref_check CHECK ((ref ~ '^[0-9a-f]{2}/[0-9a-f]{64}[.](jpg|png|webp)$'::text))
);
CREATE TABLE public.case_reports (
    id bigint NOT NULL,
    case_id text NOT NULL,
    account_id text NOT NULL,
    text text NOT NULL,
    at timestamp with time zone NOT NULL,
    plate text,
    CONSTRAINT case_reports_plate_check CHECK (((length(plate) >= 2) AND (length(plate) <= 16))),
    CONSTRAINT case_reports_text_check CHECK (((length(text) >= 1) AND (length(text) <= 1000)))
);
ALTER TABLE public.case_reports ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.case_reports_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);
CREATE TABLE public.case_rule_sets (
    version integer NOT NULL,
    rules jsonb NOT NULL,
    created_by text NOT NULL,
    remark text NOT NULL,
    created_at timestamp with time zone NOT NULL,
    CONSTRAINT case_rule_sets_created_by_check CHECK (((length(created_by) >= 1) AND (length(created_by) <= 64))),
    CONSTRAINT case_rule_sets_remark_check CHECK (((length(remark) >= 1) AND (length(remark) <= 500))),
    CONSTRAINT case_rule_sets_version_check CHECK ((version >= 1))
);
CREATE TABLE public.case_tasks (
    case_id text NOT NULL,
    holder text NOT NULL,
    state text NOT NULL,
    accepted_at timestamp with time zone,
    done_at timestamp with time zone,
    note text,
    CONSTRAINT case_tasks_note_check CHECK (((length(note) >= 1) AND (length(note) <= 500))),
    CONSTRAINT case_tasks_state_check CHECK ((state = ANY (ARRAY['dispatched'::text, 'accepted'::text, 'done'::text])))
);
CREATE TABLE public.cases (
    id text NOT NULL,
    source text NOT NULL,
    source_ref text,
    category text NOT NULL,
    level text NOT NULL,
    state text NOT NULL,
    lot_id text NOT NULL,
    district_code text NOT NULL,
    lane_id text,
    space_id text,
    text text NOT NULL,
    holder text NOT NULL,
    rule_version integer NOT NULL,
    reports integer DEFAULT 1 NOT NULL,
    reporter_account_id text,
    received_at timestamp with time zone NOT NULL,
    accept_due_at timestamp with time zone NOT NULL,
    resolve_due_at timestamp with time zone NOT NULL,
    accepted_at timestamp with time zone,
    resolved_at timestamp with time zone,
    closed_at timestamp with time zone,
    updated_at timestamp with time zone NOT NULL,
    plate text,
    CONSTRAINT cases_category_check CHECK ((category = ANY (ARRAY['space_blocked'::text, 'illegal_parking'::text, 'gate_fault'::text, 'sensor_fault'::text, 'wrong_charge'::text, 'payment_problem'::text, 'facility_damage'::text, 'safety_hazard'::text, 'other'::text]))),
    CONSTRAINT cases_check CHECK (((source = 'report'::text) = (reporter_account_id IS NOT NULL))),
    CONSTRAINT cases_id_check CHECK ((id ~ '^cs-[0-9A-HJKMNP-TV-Z]{26}$'::text)),
    CONSTRAINT cases_level_check CHECK ((level = ANY (ARRAY['small'::text, 'middle'::text, 'big'::text]))),
    CONSTRAINT cases_plate_check CHECK (((length(plate) >= 2) AND (length(plate) <= 16))),
    CONSTRAINT cases_reports_check CHECK ((reports >= 1)),
    CONSTRAINT cases_source_check CHECK ((source = ANY (ARRAY['report'::text, 'device_silent'::text, 'gate_failing'::text, 'lot_full'::text, 'payment_anomaly'::text, 'dispute'::text, 'device_clock'::text]))),
    CONSTRAINT cases_source_ref_check CHECK (((length(source_ref) >= 1) AND (length(source_ref) <= 128))),
    CONSTRAINT cases_state_check CHECK ((state = ANY (ARRAY['received'::text, 'dispatched'::text, 'accepted'::text, 'in_progress'::text, 'resolved'::text, 'closed'::text, 'reopened'::text]))),
    CONSTRAINT cases_text_check CHECK (((length(text) >= 1) AND (length(text) <= 1000)))
);
CREATE TABLE public.city_rollups (
    scope text NOT NULL,
    step text NOT NULL,
    bucket timestamp with time zone NOT NULL,
    capacity integer DEFAULT 0 NOT NULL,
    entries integer DEFAULT 0 NOT NULL,
    exits integer DEFAULT 0 NOT NULL,
    stays integer DEFAULT 0 NOT NULL,
    stay_seconds double precision DEFAULT 0 NOT NULL,
    stay_median_s double precision,
    prepaid_exits integer DEFAULT 0 NOT NULL,
    billed_fen bigint DEFAULT 0 NOT NULL,
    bills integer DEFAULT 0 NOT NULL,
    collected_fen bigint DEFAULT 0 NOT NULL,
    paid_bills integer DEFAULT 0 NOT NULL,
    contactless_bills integer DEFAULT 0 NOT NULL,
    arrears_fen bigint DEFAULT 0 NOT NULL,
    arrears_bills integer DEFAULT 0 NOT NULL,
    recovered_fen bigint DEFAULT 0 NOT NULL,
    recovered_bills integer DEFAULT 0 NOT NULL,
    disputes integer DEFAULT 0 NOT NULL,
    occupied_peak integer,
    occupied_last integer,
    devices integer,
    devices_online integer,
    lane_buckets bigint[],
    refreshed_at timestamp with time zone NOT NULL,
    CONSTRAINT city_rollups_capacity_check CHECK ((capacity >= 0)),
    CONSTRAINT city_rollups_disputes_check CHECK ((disputes >= 0)),
    CONSTRAINT city_rollups_entries_check CHECK ((entries >= 0)),
    CONSTRAINT city_rollups_exits_check CHECK ((exits >= 0)),
    CONSTRAINT city_rollups_prepaid_exits_check CHECK ((prepaid_exits >= 0)),
    CONSTRAINT city_rollups_scope_check CHECK ((scope ~ '^(city|district:[A-Z]{2,4}|company:[A-Za-z0-9_-]{1,64}|lot:[A-Za-z0-9_-]{1,64})$'::text)),
    CONSTRAINT city_rollups_stays_check CHECK ((stays >= 0)),
    CONSTRAINT city_rollups_step_check CHECK ((step = ANY (ARRAY['hour'::text, 'day'::text])))
);
CREATE TABLE public.contactless_deductions (
    id text NOT NULL,
    bill_id text NOT NULL,
    mandate_id text NOT NULL,
    attempt_id text NOT NULL,
    out_parking_no text NOT NULL,
    parking_id text,
    status text NOT NULL,
    refusal_code text,
    refusal_message text,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    CONSTRAINT contactless_deductions_id_check CHECK ((id ~ '^cd-[0-9A-HJKMNP-TV-Z]{26}$'::text)),
    CONSTRAINT contactless_deductions_out_parking_no_check CHECK ((out_parking_no ~ '^[0-9A-Za-z_-]{6,32}$'::text)),
    CONSTRAINT contactless_deductions_status_check CHECK ((status = ANY (ARRAY['requested'::text, 'accepted'::text, 'refused'::text, 'unavailable'::text, 'succeeded'::text, 'failed'::text])))
);
CREATE TABLE public.contactless_mandates (
    id text NOT NULL,
    provider text NOT NULL,
    plate text NOT NULL,
    plate_color text DEFAULT 'BLUE'::text NOT NULL,
    account_id text,
    payer_id text NOT NULL,
    state text NOT NULL,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    CONSTRAINT contactless_mandates_account_id_check CHECK (((length(account_id) >= 1) AND (length(account_id) <= 64))),
    CONSTRAINT contactless_mandates_id_check CHECK ((id ~ '^cm-[0-9A-HJKMNP-TV-Z]{26}$'::text)),
    CONSTRAINT contactless_mandates_payer_id_check CHECK (((length(payer_id) >= 1) AND (length(payer_id) <= 128))),
    CONSTRAINT contactless_mandates_plate_check CHECK (((length(plate) >= 1) AND (length(plate) <= 16))),
    CONSTRAINT contactless_mandates_plate_color_check CHECK (((length(plate_color) >= 1) AND (length(plate_color) <= 16))),
    CONSTRAINT contactless_mandates_state_check CHECK ((state = ANY (ARRAY['active'::text, 'paused'::text, 'revoked'::text])))
);
CREATE TABLE public.dead_letters (
    id bigint NOT NULL,
    source text NOT NULL,
    received_at timestamp with time zone NOT NULL,
    topic text NOT NULL,
    device_id text,
    seq bigint,
    reason text NOT NULL,
    payload bytea NOT NULL,
    CONSTRAINT dead_letters_reason_check CHECK ((reason <> ''::text))
);
CREATE SEQUENCE public.dead_letters_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.dead_letters_id_seq OWNED BY public.dead_letters.id;
CREATE TABLE public.device_clocks (
    device_id text NOT NULL,
    offset_ms bigint,
    skewed boolean NOT NULL,
    checked_at timestamp with time zone NOT NULL
);
CREATE TABLE public.device_events (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    kind text NOT NULL,
    observed_at timestamp with time zone,
    received_at timestamp with time zone NOT NULL,
    event_at timestamp with time zone,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT device_events_kind_check CHECK ((kind = ANY (ARRAY['passage'::text, 'space_state'::text, 'dead_letter'::text]))),
    CONSTRAINT device_events_seq_check CHECK (((seq >= 1) AND (seq <= '9007199254740992'::bigint)))
);
CREATE TABLE public.device_watermarks (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT device_watermarks_seq_check CHECK ((seq >= 0))
);
CREATE TABLE public.devices (
    device_id text NOT NULL,
    lot_id text NOT NULL,
    lane_id text,
    space_id text,
    kind text NOT NULL,
    password_hash text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    revoked_at timestamp with time zone,
    vendor text,
    serial text,
    control_url text,
    CONSTRAINT devices_camera_check CHECK ((((vendor IS NULL) = (serial IS NULL)) AND ((vendor IS NULL) OR (kind = 'gate'::text)) AND ((control_url IS NULL) OR (vendor = 'hikvision'::text)))),
    CONSTRAINT devices_control_url_check CHECK (((control_url ~ '^https?://\S+$'::text) AND (length(control_url) <= 500))),
    CONSTRAINT devices_device_id_check CHECK ((device_id ~ '^[A-Za-z0-9_-]{1,64}$'::text)),
    CONSTRAINT devices_kind_check CHECK ((kind = ANY (ARRAY['gate'::text, 'sensor'::text, 'sign'::text]))),
    CONSTRAINT devices_placement_check CHECK ((((kind = 'gate'::text) AND (lane_id IS NOT NULL) AND (space_id IS NULL)) OR ((kind = 'sensor'::text) AND (space_id IS NOT NULL) AND (lane_id IS NULL)) OR ((kind = 'sign'::text) AND (space_id IS NULL)))),
    CONSTRAINT devices_serial_check CHECK ((serial ~ '^[!-~]([ -~]{0,126}[!-~])?$'::text)),
    CONSTRAINT devices_vendor_check CHECK ((vendor = ANY (ARRAY['vzenith'::text, 'hikvision'::text])))
);
CREATE TABLE public.discrepancies (
    id text NOT NULL,
    provider text NOT NULL,
    business_date date NOT NULL,
    kind text NOT NULL,
    dedup_key text NOT NULL,
    status text DEFAULT 'open'::text NOT NULL,
    out_trade_no text,
    out_refund_no text,
    transaction_id text,
    refund_id text,
    attempt_id text,
    refund_request_id text,
    ours_fen bigint,
    provider_fen bigint,
    line_no integer,
    line text,
    detail text DEFAULT ''::text NOT NULL,
    found_at timestamp with time zone NOT NULL,
    last_run_id text NOT NULL,
    resolution text,
    remark text,
    resolved_by text,
    resolved_at timestamp with time zone,
    CONSTRAINT discrepancies_id_check CHECK ((id ~ '^dc-[0-9A-HJKMNP-TV-Z]{26}$'::text)),
    CONSTRAINT discrepancies_kind_check CHECK ((kind = ANY (ARRAY['missing_at_provider'::text, 'missing_internally'::text, 'amount_mismatch'::text, 'status_mismatch'::text, 'duplicate'::text, 'fee_mismatch'::text]))),
    CONSTRAINT discrepancies_remark_check CHECK (((length(remark) >= 1) AND (length(remark) <= 2000))),
    CONSTRAINT discrepancies_resolution_check CHECK ((resolution = ANY (ARRAY['apply_payment'::text, 'accept_provider'::text, 'accept_ours'::text, 'write_off'::text]))),
    CONSTRAINT discrepancies_resolved_check CHECK ((((status = 'resolved'::text) = (resolved_at IS NOT NULL)) AND ((resolved_at IS NULL) = (resolution IS NULL)) AND ((resolved_at IS NULL) = (resolved_by IS NULL)))),
    CONSTRAINT discrepancies_status_check CHECK ((status = ANY (ARRAY['open'::text, 'resolved'::text, 'withdrawn'::text])))
);
CREATE TABLE public.disputes (
    id text NOT NULL,
    bill_id text NOT NULL,
    reason text NOT NULL,
    opened_by text NOT NULL,
    opened_at timestamp with time zone NOT NULL,
    status text DEFAULT 'open'::text NOT NULL,
    decided_by text,
    decided_at timestamp with time zone,
    remark text DEFAULT ''::text NOT NULL,
    refund_fen bigint,
    CONSTRAINT disputes_decided_by_check CHECK (((length(decided_by) >= 1) AND (length(decided_by) <= 200))),
    CONSTRAINT disputes_decision_check CHECK ((((status = 'open'::text) = (decided_at IS NULL)) AND ((decided_at IS NULL) = (decided_by IS NULL)))),
    CONSTRAINT disputes_id_check CHECK ((id ~ '^dp-[0-9A-HJKMNP-TV-Z]{26}$'::text)),
    CONSTRAINT disputes_opened_by_check CHECK (((length(opened_by) >= 1) AND (length(opened_by) <= 200))),
    CONSTRAINT disputes_reason_check CHECK (((length(reason) >= 1) AND (length(reason) <= 500))),
    CONSTRAINT disputes_refund_fen_check CHECK ((refund_fen > 0)),
    CONSTRAINT disputes_remark_check CHECK ((length(remark) <= 2000)),
    CONSTRAINT disputes_status_check CHECK ((status = ANY (ARRAY['open'::text, 'approved'::text, 'rejected'::text])))
);
CREATE TABLE public.districts (
    code text NOT NULL,
    name text NOT NULL,
    kind text NOT NULL,
    latitude numeric(9,6) NOT NULL,
    longitude numeric(9,6) NOT NULL,
    CONSTRAINT districts_code_check CHECK ((code ~ '^[A-Z]{2,4}$'::text)),
    CONSTRAINT districts_kind_check CHECK ((kind = ANY (ARRAY['district'::text, 'zone'::text, 'county'::text, 'city'::text]))),
    CONSTRAINT districts_latitude_check CHECK (((latitude >= ('-90'::integer)::numeric) AND (latitude <= (90)::numeric))),
    CONSTRAINT districts_longitude_check CHECK (((longitude >= ('-180'::integer)::numeric) AND (longitude <= (180)::numeric)))
);
CREATE TABLE public.exempt_plate_kinds (
    kind text NOT NULL,
    reason text NOT NULL,
    created_by text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    company_id text,
    CONSTRAINT exempt_plate_kinds_reason_check CHECK ((reason <> ''::text))
);
CREATE TABLE public.idempotency_keys (
    scope text NOT NULL,
    key text NOT NULL,
    endpoint text NOT NULL,
    request_hash text NOT NULL,
    state text NOT NULL,
    response_status integer,
    response_body bytea,
    created_at timestamp with time zone NOT NULL,
    locked_at timestamp with time zone NOT NULL,
    completed_at timestamp with time zone,
    CONSTRAINT idempotency_keys_endpoint_check CHECK (((length(endpoint) >= 1) AND (length(endpoint) <= 200))),
    CONSTRAINT idempotency_keys_key_check CHECK (((length(key) >= 1) AND (length(key) <= 255))),
    CONSTRAINT idempotency_keys_request_hash_check CHECK ((request_hash ~ '^[0-9a-f]{64}$'::text)),
    CONSTRAINT idempotency_keys_response_check CHECK ((((state = 'done'::text) = (response_status IS NOT NULL)) AND ((response_status IS NULL) = (response_body IS NULL)) AND ((response_status IS NULL) = (completed_at IS NULL)))),
    CONSTRAINT idempotency_keys_response_status_check CHECK (((response_status >= 200) AND (response_status <= 499))),
    CONSTRAINT idempotency_keys_scope_check CHECK (((length(scope) >= 1) AND (length(scope) <= 200))),
    CONSTRAINT idempotency_keys_state_check CHECK ((state = ANY (ARRAY['in_flight'::text, 'done'::text])))
);
CREATE TABLE public.lanes (
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    CONSTRAINT lanes_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text]))),
    CONSTRAINT lanes_lane_id_check CHECK ((lane_id ~ '^[A-Za-z0-9_-]{1,64}$'::text))
);
CREATE TABLE public.ledger_accounts (
    code text NOT NULL,
    kind text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT ledger_accounts_code_check CHECK ((code ~ '^[a-z][a-z_]{0,31}(:[A-Za-z0-9_-]{1,64})?$'::text)),
    CONSTRAINT ledger_accounts_kind_check CHECK ((kind = ANY (ARRAY['asset'::text, 'liability'::text, 'revenue'::text, 'expense'::text, 'equity'::text])))
);
CREATE TABLE public.ledger_postings (
    transaction_id text NOT NULL,
    line smallint NOT NULL,
    account_code text NOT NULL,
    amount_fen bigint NOT NULL,
    currency character(3) DEFAULT 'CNY'::bpchar NOT NULL,
    CONSTRAINT ledger_postings_amount_fen_check CHECK ((amount_fen <> 0)),
    CONSTRAINT ledger_postings_currency_check CHECK ((currency ~ '^[A-Z]{3}$'::text)),
    CONSTRAINT ledger_postings_line_check CHECK ((line >= 1))
);
CREATE TABLE public.ledger_transactions (
    id text NOT NULL,
    seq bigint NOT NULL,
    kind text NOT NULL,
    idempotency_key text NOT NULL,
    correlation_id text NOT NULL,
    reverses text,
    occurred_at timestamp with time zone NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    memo text DEFAULT ''::text NOT NULL,
    CONSTRAINT ledger_transactions_correlation_id_check CHECK (((length(correlation_id) >= 1) AND (length(correlation_id) <= 200))),
    CONSTRAINT ledger_transactions_id_check CHECK ((id ~ '^lt-[0-9A-HJKMNP-TV-Z]{26}$'::text)),
    CONSTRAINT ledger_transactions_idempotency_key_check CHECK (((length(idempotency_key) >= 1) AND (length(idempotency_key) <= 200))),
    CONSTRAINT ledger_transactions_kind_check CHECK ((kind = ANY (ARRAY['bill_opened'::text, 'bill_paid'::text, 'refund'::text, 'write_off'::text, 'reversal'::text, 'settlement'::text, 'suspense'::text]))),
    CONSTRAINT ledger_transactions_memo_check CHECK ((length(memo) <= 2000)),
    CONSTRAINT ledger_transactions_reversal_check CHECK ((((kind = 'reversal'::text) = (reverses IS NOT NULL)) AND ((reverses IS NULL) OR (idempotency_key = reverses))))
);
ALTER TABLE public.ledger_transactions ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.ledger_transactions_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);
CREATE TABLE public.lot_camera_sources (
    lot_id text NOT NULL,
    network cidr NOT NULL
);
CREATE TABLE public.lot_group_members (
    group_id text NOT NULL,
    lot_id text NOT NULL
);
CREATE TABLE public.lot_groups (
    id text NOT NULL,
    name text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT lot_groups_id_check CHECK ((id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'::text))
);
CREATE TABLE public.lot_tariffs (
    lot_id text NOT NULL,
    vehicle_class smallint NOT NULL,
    tariff_id text NOT NULL,
    CONSTRAINT lot_tariffs_vehicle_class_check CHECK (((vehicle_class >= 1) AND (vehicle_class <= 5)))
);
CREATE TABLE public.lots (
    id text NOT NULL,
    name text NOT NULL,
    district_code text NOT NULL,
    kind text NOT NULL,
    capacity integer NOT NULL,
    latitude numeric(9,6) NOT NULL,
    longitude numeric(9,6) NOT NULL,
    full_policy text DEFAULT 'hold'::text NOT NULL,
    arrears_hold_after interval DEFAULT '7 days'::interval NOT NULL,
    exit_window_minutes integer DEFAULT 15 NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    review_stay_limit interval DEFAULT '7 days'::interval NOT NULL,
    review_fee_ceiling_fen integer DEFAULT 20000 NOT NULL,
    company_id text,
    address text,
    CONSTRAINT lots_address_check CHECK (((address IS NULL) OR ((length(address) >= 1) AND (length(address) <= 200)))),
    CONSTRAINT lots_arrears_hold_after_check CHECK ((arrears_hold_after >= '00:00:00'::interval)),
    CONSTRAINT lots_capacity_check CHECK ((capacity > 0)),
    CONSTRAINT lots_exit_window_minutes_check CHECK ((exit_window_minutes >= 0)),
    CONSTRAINT lots_full_policy_check CHECK ((full_policy = ANY (ARRAY['hold'::text, 'open'::text]))),
    CONSTRAINT lots_id_check CHECK ((id ~ '^[A-Za-z0-9_-]{1,64}$'::text)),
    CONSTRAINT lots_kind_check CHECK ((kind = ANY (ARRAY['gated'::text, 'on_street'::text]))),
    CONSTRAINT lots_latitude_check CHECK (((latitude >= ('-90'::integer)::numeric) AND (latitude <= (90)::numeric))),
    CONSTRAINT lots_longitude_check CHECK (((longitude >= ('-180'::integer)::numeric) AND (longitude <= (180)::numeric))),
    CONSTRAINT lots_review_fee_ceiling_fen_check CHECK ((review_fee_ceiling_fen >= 0)),
    CONSTRAINT lots_review_stay_limit_check CHECK ((review_stay_limit > '00:00:00'::interval))
);
CREATE TABLE public.monthly_passes (
    id text NOT NULL,
    plate text NOT NULL,
    group_id text NOT NULL,
    valid_from timestamp with time zone NOT NULL,
    valid_until timestamp with time zone NOT NULL,
    created_by text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    revoked_at timestamp with time zone,
    CONSTRAINT monthly_passes_period_check CHECK ((valid_until > valid_from))
);
CREATE TABLE public.operator_companies (
    id text NOT NULL,
    name text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT operator_companies_id_check CHECK ((id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'::text)),
    CONSTRAINT operator_companies_name_check CHECK (((length(name) >= 1) AND (length(name) <= 100)))
);
CREATE TABLE public.passages (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
)
PARTITION BY RANGE (received_at);
CREATE TABLE public.passages_2026_01 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
);
CREATE TABLE public.passages_2026_02 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
);
CREATE TABLE public.passages_2026_03 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
);
CREATE TABLE public.passages_2026_04 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
);
CREATE TABLE public.passages_2026_05 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
);
CREATE TABLE public.passages_2026_06 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
);
CREATE TABLE public.passages_2026_07 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
);
CREATE TABLE public.passages_2026_08 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
);
CREATE TABLE public.passages_2026_09 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
);
CREATE TABLE public.passages_2026_10 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
);
CREATE TABLE public.passages_2026_11 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
);
CREATE TABLE public.passages_2026_12 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
);
CREATE TABLE public.passages_2027_01 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
);
CREATE TABLE public.passages_2027_02 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
);
CREATE TABLE public.passages_2027_03 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
);
CREATE TABLE public.passages_2027_04 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
);
CREATE TABLE public.passages_2027_05 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
);
CREATE TABLE public.passages_2027_06 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
);
CREATE TABLE public.passages_2027_07 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
);
CREATE TABLE public.passages_2027_08 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
);
CREATE TABLE public.passages_2027_09 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
);
CREATE TABLE public.passages_2027_10 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
);
CREATE TABLE public.passages_2027_11 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
);
CREATE TABLE public.passages_2027_12 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    plate text,
    plate_raw text,
    plate_color text,
    confidence real,
    image_ref text,
    outcome text NOT NULL,
    hold_reason text,
    session_id text,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint,
    CONSTRAINT passages_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text])))
);
CREATE TABLE public.payment_anomalies (
    id text NOT NULL,
    kind text NOT NULL,
    dedup_key text NOT NULL,
    status text DEFAULT 'open'::text NOT NULL,
    provider text NOT NULL,
    out_trade_no text,
    out_refund_no text,
    notification_id text,
    attempt_id text,
    bill_id text,
    amount_fen bigint,
    expected_fen bigint,
    action text DEFAULT 'none'::text NOT NULL,
    detail text DEFAULT ''::text NOT NULL,
    created_at timestamp with time zone NOT NULL,
    resolved_at timestamp with time zone,
    resolved_by text,
    remark text DEFAULT ''::text NOT NULL,
    CONSTRAINT payment_anomalies_action_check CHECK ((action = ANY (ARRAY['none'::text, 'applied'::text, 'auto_refund'::text]))),
    CONSTRAINT payment_anomalies_dedup_key_check CHECK (((length(dedup_key) >= 1) AND (length(dedup_key) <= 200))),
    CONSTRAINT payment_anomalies_detail_check CHECK ((length(detail) <= 2000)),
    CONSTRAINT payment_anomalies_id_check CHECK ((id ~ '^pan-[0-9A-HJKMNP-TV-Z]{26}$'::text)),
    CONSTRAINT payment_anomalies_kind_check CHECK ((kind = ANY (ARRAY['amount_mismatch'::text, 'unknown_order'::text, 'refund_before_payment'::text, 'unknown_refund'::text, 'paid_after_close'::text, 'duplicate_payment'::text, 'refund_failed'::text, 'malformed_notification'::text, 'refund_unapplied'::text]))),
    CONSTRAINT payment_anomalies_remark_check CHECK ((length(remark) <= 2000)),
    CONSTRAINT payment_anomalies_resolution_check CHECK ((((status = 'resolved'::text) = (resolved_at IS NOT NULL)) AND ((resolved_at IS NULL) = (resolved_by IS NULL)))),
    CONSTRAINT payment_anomalies_status_check CHECK ((status = ANY (ARRAY['open'::text, 'resolved'::text])))
);
CREATE TABLE public.payment_attempts (
    id text NOT NULL,
    provider text NOT NULL,
    kind text NOT NULL,
    out_trade_no text NOT NULL,
    amount_fen bigint NOT NULL,
    status text DEFAULT 'pending'::text NOT NULL,
    payer_account_id text,
    payer_plate text,
    idempotency_scope text,
    idempotency_key text,
    code_url text,
    ordered_at timestamp with time zone,
    transaction_id text,
    provider_state text DEFAULT ''::text NOT NULL,
    failure text DEFAULT ''::text NOT NULL,
    recheck boolean DEFAULT false NOT NULL,
    swept_at timestamp with time zone,
    created_at timestamp with time zone NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    settled_at timestamp with time zone,
    updated_at timestamp with time zone NOT NULL,
    CONSTRAINT payment_attempts_amount_fen_check CHECK ((amount_fen > 0)),
    CONSTRAINT payment_attempts_expiry_check CHECK ((expires_at > created_at)),
    CONSTRAINT payment_attempts_failure_check CHECK ((length(failure) <= 500)),
    CONSTRAINT payment_attempts_id_check CHECK ((id ~ '^pa-[0-9A-HJKMNP-TV-Z]{26}$'::text)),
    CONSTRAINT payment_attempts_idempotency_check CHECK (((idempotency_scope IS NULL) = (idempotency_key IS NULL))),
    CONSTRAINT payment_attempts_kind_check CHECK ((kind = ANY (ARRAY['native'::text, 'h5'::text, 'contactless'::text]))),
    CONSTRAINT payment_attempts_out_trade_no_check CHECK ((out_trade_no ~ '^[0-9A-Za-z_-]{6,32}$'::text)),
    CONSTRAINT payment_attempts_paid_check CHECK (((status <> 'paid'::text) OR (transaction_id IS NOT NULL))),
    CONSTRAINT payment_attempts_payer_account_id_check CHECK (((length(payer_account_id) >= 1) AND (length(payer_account_id) <= 64))),
    CONSTRAINT payment_attempts_payer_check CHECK (((payer_account_id IS NOT NULL) OR (payer_plate IS NOT NULL))),
    CONSTRAINT payment_attempts_payer_plate_check CHECK (((length(payer_plate) >= 1) AND (length(payer_plate) <= 16))),
    CONSTRAINT payment_attempts_provider_check CHECK ((provider ~ '^[a-z][a-z0-9_-]{0,31}$'::text)),
    CONSTRAINT payment_attempts_settled_check CHECK (((status = 'pending'::text) = (settled_at IS NULL))),
    CONSTRAINT payment_attempts_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'paid'::text, 'failed'::text, 'expired'::text, 'closed'::text]))),
    CONSTRAINT payment_attempts_transaction_id_check CHECK (((length(transaction_id) >= 1) AND (length(transaction_id) <= 64)))
);
CREATE TABLE public.payment_bills (
    attempt_id text NOT NULL,
    bill_id text NOT NULL,
    amount_fen bigint NOT NULL,
    CONSTRAINT payment_bills_amount_fen_check CHECK ((amount_fen > 0))
);
CREATE TABLE public.payment_notifications (
    id bigint NOT NULL,
    provider text NOT NULL,
    notification_id text NOT NULL,
    kind text NOT NULL,
    out_trade_no text NOT NULL,
    event jsonb NOT NULL,
    received_at timestamp with time zone NOT NULL,
    processed_at timestamp with time zone,
    outcome text,
    CONSTRAINT payment_notifications_notification_id_check CHECK (((length(notification_id) >= 1) AND (length(notification_id) <= 128))),
    CONSTRAINT payment_notifications_outcome_check CHECK ((length(outcome) <= 200)),
    CONSTRAINT payment_notifications_processed_check CHECK (((processed_at IS NULL) = (outcome IS NULL)))
);
ALTER TABLE public.payment_notifications ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.payment_notifications_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);
CREATE TABLE public.plate_blacklist (
    plate text NOT NULL,
    reason text NOT NULL,
    created_by text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    company_id text,
    CONSTRAINT plate_blacklist_reason_check CHECK ((reason <> ''::text))
);
CREATE TABLE public.plate_claims (
    id text NOT NULL,
    plate text NOT NULL,
    claimant_account_id text NOT NULL,
    holder_account_id text,
    evidence text NOT NULL,
    status text DEFAULT 'pending'::text NOT NULL,
    created_at timestamp with time zone NOT NULL,
    decided_at timestamp with time zone,
    decided_by text,
    decision_note text,
    photo_ref text,
    CONSTRAINT plate_claims_decision_check CHECK (((status = 'pending'::text) = ((decided_at IS NULL) AND (decided_by IS NULL)))),
    CONSTRAINT plate_claims_decision_note_check CHECK ((length(decision_note) <= 500)),
    CONSTRAINT plate_claims_evidence_check CHECK (((length(evidence) >= 1) AND (length(evidence) <= 500))),
    CONSTRAINT plate_claims_id_check CHECK ((id ~ '^pc-[0-9A-HJKMNP-TV-Z]{26}$'::text)),
    CONSTRAINT plate_claims_photo_ref_check CHECK ((photo_ref ~ '^[\x21-\x7e]{1,200}$'::text)),
    CONSTRAINT plate_claims_plate_check CHECK (((length(plate) >= 2) AND (length(plate) <= 16))),
    CONSTRAINT plate_claims_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'approved'::text, 'rejected'::text])))
);
CREATE TABLE public.plate_exemptions (
    plate text NOT NULL,
    reason text NOT NULL,
    created_by text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    company_id text,
    CONSTRAINT plate_exemptions_reason_check CHECK ((reason <> ''::text))
);
CREATE TABLE public.plate_violations (
    id bigint NOT NULL,
    plate text NOT NULL,
    case_id text NOT NULL,
    lot_id text NOT NULL,
    at timestamp with time zone NOT NULL,
    found text NOT NULL,
    outcome text NOT NULL,
    repeat_of bigint,
    holder_account_id text,
    by_actor text NOT NULL,
    CONSTRAINT plate_violations_check CHECK (((found = 'not_found'::text) = (outcome = 'none'::text))),
    CONSTRAINT plate_violations_check1 CHECK (((outcome <> 'referred'::text) OR (found = 'serious'::text) OR (repeat_of IS NOT NULL))),
    CONSTRAINT plate_violations_found_check CHECK ((found = ANY (ARRAY['minor'::text, 'serious'::text, 'not_found'::text]))),
    CONSTRAINT plate_violations_outcome_check CHECK ((outcome = ANY (ARRAY['reminder'::text, 'referred'::text, 'none'::text]))),
    CONSTRAINT plate_violations_plate_check CHECK (((length(plate) >= 2) AND (length(plate) <= 16)))
);
ALTER TABLE public.plate_violations ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.plate_violations_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);
CREATE TABLE public.reconciliation_pool (
    provider text NOT NULL,
    kind text NOT NULL,
    match_key text NOT NULL,
    business_date date NOT NULL,
    ours_fen bigint NOT NULL,
    status text NOT NULL,
    cleared_on date,
    CONSTRAINT reconciliation_pool_cleared_check CHECK (((status = 'cleared'::text) = (cleared_on IS NOT NULL))),
    CONSTRAINT reconciliation_pool_kind_check CHECK ((kind = ANY (ARRAY['payment'::text, 'refund'::text]))),
    CONSTRAINT reconciliation_pool_status_check CHECK ((status = ANY (ARRAY['waiting'::text, 'cleared'::text, 'missing'::text])))
);
CREATE TABLE public.reconciliation_runs (
    id text NOT NULL,
    provider text NOT NULL,
    business_date date NOT NULL,
    import_id text NOT NULL,
    started_at timestamp with time zone NOT NULL,
    finished_at timestamp with time zone NOT NULL,
    duration_ms integer NOT NULL,
    lines integer NOT NULL,
    matched integer NOT NULL,
    matched_fen bigint NOT NULL,
    fees_fen bigint NOT NULL,
    refunds integer NOT NULL,
    refunds_fen bigint NOT NULL,
    discrepancies integer NOT NULL,
    pending integer NOT NULL,
    settled boolean NOT NULL,
    run_by text NOT NULL,
    CONSTRAINT reconciliation_runs_duration_ms_check CHECK ((duration_ms >= 0)),
    CONSTRAINT reconciliation_runs_id_check CHECK ((id ~ '^rc-[0-9A-HJKMNP-TV-Z]{26}$'::text))
);
CREATE TABLE public.refresh_tokens (
    jti text NOT NULL,
    session_id text NOT NULL,
    issued_at timestamp with time zone NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    rotated_at timestamp with time zone,
    access_jti text NOT NULL,
    access_expires_at timestamp with time zone NOT NULL,
    CONSTRAINT refresh_tokens_access_jti_check CHECK (((length(access_jti) >= 8) AND (length(access_jti) <= 64))),
    CONSTRAINT refresh_tokens_jti_check CHECK (((length(jti) >= 8) AND (length(jti) <= 64))),
    CONSTRAINT refresh_tokens_period_check CHECK ((expires_at > issued_at))
);
CREATE TABLE public.refund_requests (
    id text NOT NULL,
    bill_id text,
    attempt_id text,
    provider text NOT NULL,
    out_trade_no text NOT NULL,
    out_refund_no text NOT NULL,
    amount_fen bigint NOT NULL,
    status text NOT NULL,
    reason text DEFAULT ''::text NOT NULL,
    requested_by text NOT NULL,
    decided_by text,
    remark text DEFAULT ''::text NOT NULL,
    dispute_id text,
    anomaly_id text,
    provider_refund_id text,
    submitted_at timestamp with time zone,
    last_error text DEFAULT ''::text NOT NULL,
    created_at timestamp with time zone NOT NULL,
    decided_at timestamp with time zone,
    refunded_at timestamp with time zone,
    updated_at timestamp with time zone NOT NULL,
    CONSTRAINT refund_requests_amount_fen_check CHECK ((amount_fen > 0)),
    CONSTRAINT refund_requests_decided_by_check CHECK (((length(decided_by) >= 1) AND (length(decided_by) <= 200))),
    CONSTRAINT refund_requests_id_check CHECK ((id ~ '^rr-[0-9A-HJKMNP-TV-Z]{26}$'::text)),
    CONSTRAINT refund_requests_last_error_check CHECK ((length(last_error) <= 500)),
    CONSTRAINT refund_requests_out_refund_no_check CHECK ((out_refund_no ~ '^[0-9A-Za-z_-]{6,32}$'::text)),
    CONSTRAINT refund_requests_reason_check CHECK ((length(reason) <= 500)),
    CONSTRAINT refund_requests_refunded_check CHECK (((status = 'refunded'::text) = (refunded_at IS NOT NULL))),
    CONSTRAINT refund_requests_remark_check CHECK ((length(remark) <= 2000)),
    CONSTRAINT refund_requests_requested_by_check CHECK (((length(requested_by) >= 1) AND (length(requested_by) <= 200))),
    CONSTRAINT refund_requests_status_check CHECK ((status = ANY (ARRAY['requested'::text, 'approved'::text, 'rejected'::text, 'refunded'::text, 'failed'::text]))),
    CONSTRAINT refund_requests_subject_check CHECK (((bill_id IS NOT NULL) OR (anomaly_id IS NOT NULL)))
);
CREATE TABLE public.retention_runs (
    id bigint NOT NULL,
    at timestamp with time zone NOT NULL,
    kind text NOT NULL,
    cutoff timestamp with time zone NOT NULL,
    removed bigint NOT NULL,
    detail jsonb NOT NULL,
    CONSTRAINT retention_runs_kind_check CHECK ((kind = ANY (ARRAY['passages'::text, 'sensor_readings'::text, 'dead_letters'::text, 'plates'::text, 'archive'::text]))),
    CONSTRAINT retention_runs_removed_check CHECK ((removed >= 0))
);
ALTER TABLE public.retention_runs ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.retention_runs_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);
CREATE TABLE public.rollup_changes (
    hour timestamp with time zone NOT NULL
);
CREATE TABLE public.schema_migrations (
    version integer NOT NULL,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);
CREATE TABLE public.sessions (
    id text NOT NULL,
    lot_id text NOT NULL,
    plate text,
    plate_raw text,
    status text NOT NULL,
    entry_at timestamp with time zone,
    exit_at timestamp with time zone,
    entry_device_id text,
    entry_seq bigint,
    exit_device_id text,
    exit_seq bigint,
    vehicle_class smallint,
    fee_fen bigint,
    tariff_id text,
    tariff_version integer,
    pricing_reason text,
    quote jsonb,
    superseded_by text,
    flags text[] DEFAULT '{}'::text[] NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    account_id text,
    CONSTRAINT sessions_closed_has_fee CHECK (((status <> 'closed'::text) OR (fee_fen IS NOT NULL))),
    CONSTRAINT sessions_entry_or_exit CHECK (((entry_at IS NOT NULL) OR (exit_at IS NOT NULL))),
    CONSTRAINT sessions_fee_fen_check CHECK ((fee_fen >= 0)),
    CONSTRAINT sessions_status_check CHECK ((status = ANY (ARRAY['open'::text, 'closed'::text, 'superseded'::text, 'voided'::text]))),
    CONSTRAINT sessions_vehicle_class_check CHECK (((vehicle_class >= 1) AND (vehicle_class <= 5)))
)
PARTITION BY RANGE (id);
CREATE TABLE public.sessions_open (
    id text NOT NULL,
    lot_id text NOT NULL,
    plate text,
    account_id text
);
CREATE TABLE public.sessions_unsorted (
    id text NOT NULL,
    lot_id text NOT NULL,
    plate text,
    plate_raw text,
    status text NOT NULL,
    entry_at timestamp with time zone,
    exit_at timestamp with time zone,
    entry_device_id text,
    entry_seq bigint,
    exit_device_id text,
    exit_seq bigint,
    vehicle_class smallint,
    fee_fen bigint,
    tariff_id text,
    tariff_version integer,
    pricing_reason text,
    quote jsonb,
    superseded_by text,
    flags text[] DEFAULT '{}'::text[] NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    account_id text,
    CONSTRAINT sessions_closed_has_fee CHECK (((status <> 'closed'::text) OR (fee_fen IS NOT NULL))),
    CONSTRAINT sessions_entry_or_exit CHECK (((entry_at IS NOT NULL) OR (exit_at IS NOT NULL))),
    CONSTRAINT sessions_fee_fen_check CHECK ((fee_fen >= 0)),
    CONSTRAINT sessions_status_check CHECK ((status = ANY (ARRAY['open'::text, 'closed'::text, 'superseded'::text, 'voided'::text]))),
    CONSTRAINT sessions_unsorted_names_no_month CHECK ((public.session_id_month(id) IS NULL)),
    CONSTRAINT sessions_vehicle_class_check CHECK (((vehicle_class >= 1) AND (vehicle_class <= 5)))
);
CREATE TABLE public.space_events (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
)
PARTITION BY RANGE (received_at);
CREATE TABLE public.space_events_2026_01 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
);
CREATE TABLE public.space_events_2026_02 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
);
CREATE TABLE public.space_events_2026_03 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
);
CREATE TABLE public.space_events_2026_04 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
);
CREATE TABLE public.space_events_2026_05 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
);
CREATE TABLE public.space_events_2026_06 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
);
CREATE TABLE public.space_events_2026_07 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
);
CREATE TABLE public.space_events_2026_08 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
);
CREATE TABLE public.space_events_2026_09 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
);
CREATE TABLE public.space_events_2026_10 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
);
CREATE TABLE public.space_events_2026_11 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
);
CREATE TABLE public.space_events_2026_12 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
);
CREATE TABLE public.space_events_2027_01 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
);
CREATE TABLE public.space_events_2027_02 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
);
CREATE TABLE public.space_events_2027_03 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
);
CREATE TABLE public.space_events_2027_04 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
);
CREATE TABLE public.space_events_2027_05 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
);
CREATE TABLE public.space_events_2027_06 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
);
CREATE TABLE public.space_events_2027_07 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
);
CREATE TABLE public.space_events_2027_08 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
);
CREATE TABLE public.space_events_2027_09 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
);
CREATE TABLE public.space_events_2027_10 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
);
CREATE TABLE public.space_events_2027_11 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
);
CREATE TABLE public.space_events_2027_12 (
    device_id text NOT NULL,
    seq bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    battery_pct smallint,
    event_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    clock_offset_ms bigint
);
CREATE TABLE public.space_states (
    lot_id text NOT NULL,
    space_id text NOT NULL,
    occupied boolean NOT NULL,
    device_id text NOT NULL,
    seq bigint NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    received_at timestamp with time zone NOT NULL
);
CREATE TABLE public.spaces (
    lot_id text NOT NULL,
    space_id text NOT NULL,
    kind text DEFAULT 'standard'::text NOT NULL,
    CONSTRAINT spaces_kind_check CHECK ((kind = ANY (ARRAY['standard'::text, 'accessible'::text, 'charging'::text, 'large'::text]))),
    CONSTRAINT spaces_space_id_check CHECK ((space_id ~ '^[A-Za-z0-9_-]{1,64}$'::text))
);
CREATE TABLE public.statement_imports (
    id text NOT NULL,
    provider text NOT NULL,
    business_date date NOT NULL,
    kind text NOT NULL,
    sha256 text NOT NULL,
    size_bytes bigint NOT NULL,
    source text NOT NULL,
    path text NOT NULL,
    lines integer NOT NULL,
    imported_by text NOT NULL,
    imported_at timestamp with time zone NOT NULL,
    replaced_at timestamp with time zone,
    replaced_by text,
    CONSTRAINT statement_imports_id_check CHECK ((id ~ '^si-[0-9A-HJKMNP-TV-Z]{26}$'::text)),
    CONSTRAINT statement_imports_imported_by_check CHECK (((length(imported_by) >= 1) AND (length(imported_by) <= 200))),
    CONSTRAINT statement_imports_kind_check CHECK ((kind = ANY (ARRAY['wechat-tradebill'::text, 'alipay-bill-zip'::text]))),
    CONSTRAINT statement_imports_lines_check CHECK ((lines >= 0)),
    CONSTRAINT statement_imports_provider_check CHECK ((provider ~ '^[a-z][a-z0-9_-]{0,31}$'::text)),
    CONSTRAINT statement_imports_sha256_check CHECK ((sha256 ~ '^[0-9a-f]{64}$'::text)),
    CONSTRAINT statement_imports_size_bytes_check CHECK ((size_bytes >= 0)),
    CONSTRAINT statement_imports_source_check CHECK ((source = ANY (ARRAY['fetched'::text, 'imported'::text])))
);
CREATE TABLE public.statement_lines (
    import_id text NOT NULL,
    line_no integer NOT NULL,
    kind text NOT NULL,
    match_key text NOT NULL,
    out_trade_no text NOT NULL,
    out_refund_no text,
    transaction_id text NOT NULL,
    refund_id text,
    state text NOT NULL,
    succeeded boolean NOT NULL,
    amount_fen bigint NOT NULL,
    fee_milli_fen bigint NOT NULL,
    trade_time timestamp with time zone NOT NULL,
    line text NOT NULL,
    CONSTRAINT statement_lines_amount_fen_check CHECK ((amount_fen >= 0)),
    CONSTRAINT statement_lines_kind_check CHECK ((kind = ANY (ARRAY['payment'::text, 'refund'::text]))),
    CONSTRAINT statement_lines_line_no_check CHECK ((line_no >= 1))
);
CREATE TABLE public.tariff_versions (
    tariff_id text NOT NULL,
    version integer NOT NULL,
    effective_from timestamp with time zone NOT NULL,
    document jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    created_by text NOT NULL,
    CONSTRAINT tariff_versions_version_check CHECK ((version >= 1))
);
CREATE TABLE public.tariffs (
    id text NOT NULL,
    name text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    company_id text,
    CONSTRAINT tariffs_id_check CHECK ((id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'::text))
);
CREATE TABLE public.vehicle_class_overrides (
    plate text NOT NULL,
    vehicle_class smallint NOT NULL,
    reason text NOT NULL,
    set_by text NOT NULL,
    set_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT vehicle_class_overrides_vehicle_class_check CHECK (((vehicle_class >= 1) AND (vehicle_class <= 5)))
);
CREATE TABLE public.vehicles (
    id text NOT NULL,
    account_id text NOT NULL,
    plate text NOT NULL,
    bound_at timestamp with time zone NOT NULL,
    released_at timestamp with time zone,
    released_reason text,
    verified_at timestamp with time zone,
    verified_by text,
    CONSTRAINT vehicles_id_check CHECK ((id ~ '^veh-[0-9A-HJKMNP-TV-Z]{26}$'::text)),
    CONSTRAINT vehicles_plate_check CHECK (((length(plate) >= 2) AND (length(plate) <= 16))),
    CONSTRAINT vehicles_release_check CHECK (((released_at IS NULL) = (released_reason IS NULL))),
    CONSTRAINT vehicles_released_reason_check CHECK ((released_reason = ANY (ARRAY['unbound'::text, 'claimed'::text]))),
    CONSTRAINT vehicles_verification_check CHECK (((verified_at IS NULL) = (verified_by IS NULL))),
    CONSTRAINT vehicles_verified_by_check CHECK ((verified_by ~ '^(claim:pc-[0-9A-HJKMNP-TV-Z]{26}|provider:[a-z][a-z0-9_-]{0,31})$'::text))
);
ALTER TABLE ONLY public.passages ATTACH PARTITION public.passages_2026_01 FOR VALUES FROM ('2026-01-01 00:00:00+00') TO ('2026-02-01 00:00:00+00');
ALTER TABLE ONLY public.passages ATTACH PARTITION public.passages_2026_02 FOR VALUES FROM ('2026-02-01 00:00:00+00') TO ('2026-03-01 00:00:00+00');
ALTER TABLE ONLY public.passages ATTACH PARTITION public.passages_2026_03 FOR VALUES FROM ('2026-03-01 00:00:00+00') TO ('2026-04-01 00:00:00+00');
ALTER TABLE ONLY public.passages ATTACH PARTITION public.passages_2026_04 FOR VALUES FROM ('2026-04-01 00:00:00+00') TO ('2026-05-01 00:00:00+00');
ALTER TABLE ONLY public.passages ATTACH PARTITION public.passages_2026_05 FOR VALUES FROM ('2026-05-01 00:00:00+00') TO ('2026-06-01 00:00:00+00');
ALTER TABLE ONLY public.passages ATTACH PARTITION public.passages_2026_06 FOR VALUES FROM ('2026-06-01 00:00:00+00') TO ('2026-07-01 00:00:00+00');
ALTER TABLE ONLY public.passages ATTACH PARTITION public.passages_2026_07 FOR VALUES FROM ('2026-07-01 00:00:00+00') TO ('2026-08-01 00:00:00+00');
ALTER TABLE ONLY public.passages ATTACH PARTITION public.passages_2026_08 FOR VALUES FROM ('2026-08-01 00:00:00+00') TO ('2026-09-01 00:00:00+00');
ALTER TABLE ONLY public.passages ATTACH PARTITION public.passages_2026_09 FOR VALUES FROM ('2026-09-01 00:00:00+00') TO ('2026-10-01 00:00:00+00');
ALTER TABLE ONLY public.passages ATTACH PARTITION public.passages_2026_10 FOR VALUES FROM ('2026-10-01 00:00:00+00') TO ('2026-11-01 00:00:00+00');
ALTER TABLE ONLY public.passages ATTACH PARTITION public.passages_2026_11 FOR VALUES FROM ('2026-11-01 00:00:00+00') TO ('2026-12-01 00:00:00+00');
ALTER TABLE ONLY public.passages ATTACH PARTITION public.passages_2026_12 FOR VALUES FROM ('2026-12-01 00:00:00+00') TO ('2027-01-01 00:00:00+00');
ALTER TABLE ONLY public.passages ATTACH PARTITION public.passages_2027_01 FOR VALUES FROM ('2027-01-01 00:00:00+00') TO ('2027-02-01 00:00:00+00');
ALTER TABLE ONLY public.passages ATTACH PARTITION public.passages_2027_02 FOR VALUES FROM ('2027-02-01 00:00:00+00') TO ('2027-03-01 00:00:00+00');
ALTER TABLE ONLY public.passages ATTACH PARTITION public.passages_2027_03 FOR VALUES FROM ('2027-03-01 00:00:00+00') TO ('2027-04-01 00:00:00+00');
ALTER TABLE ONLY public.passages ATTACH PARTITION public.passages_2027_04 FOR VALUES FROM ('2027-04-01 00:00:00+00') TO ('2027-05-01 00:00:00+00');
ALTER TABLE ONLY public.passages ATTACH PARTITION public.passages_2027_05 FOR VALUES FROM ('2027-05-01 00:00:00+00') TO ('2027-06-01 00:00:00+00');
ALTER TABLE ONLY public.passages ATTACH PARTITION public.passages_2027_06 FOR VALUES FROM ('2027-06-01 00:00:00+00') TO ('2027-07-01 00:00:00+00');
ALTER TABLE ONLY public.passages ATTACH PARTITION public.passages_2027_07 FOR VALUES FROM ('2027-07-01 00:00:00+00') TO ('2027-08-01 00:00:00+00');
ALTER TABLE ONLY public.passages ATTACH PARTITION public.passages_2027_08 FOR VALUES FROM ('2027-08-01 00:00:00+00') TO ('2027-09-01 00:00:00+00');
ALTER TABLE ONLY public.passages ATTACH PARTITION public.passages_2027_09 FOR VALUES FROM ('2027-09-01 00:00:00+00') TO ('2027-10-01 00:00:00+00');
ALTER TABLE ONLY public.passages ATTACH PARTITION public.passages_2027_10 FOR VALUES FROM ('2027-10-01 00:00:00+00') TO ('2027-11-01 00:00:00+00');
ALTER TABLE ONLY public.passages ATTACH PARTITION public.passages_2027_11 FOR VALUES FROM ('2027-11-01 00:00:00+00') TO ('2027-12-01 00:00:00+00');
ALTER TABLE ONLY public.passages ATTACH PARTITION public.passages_2027_12 FOR VALUES FROM ('2027-12-01 00:00:00+00') TO ('2028-01-01 00:00:00+00');
ALTER TABLE ONLY public.sessions ATTACH PARTITION public.sessions_unsorted DEFAULT;
ALTER TABLE ONLY public.space_events ATTACH PARTITION public.space_events_2026_01 FOR VALUES FROM ('2026-01-01 00:00:00+00') TO ('2026-02-01 00:00:00+00');
ALTER TABLE ONLY public.space_events ATTACH PARTITION public.space_events_2026_02 FOR VALUES FROM ('2026-02-01 00:00:00+00') TO ('2026-03-01 00:00:00+00');
ALTER TABLE ONLY public.space_events ATTACH PARTITION public.space_events_2026_03 FOR VALUES FROM ('2026-03-01 00:00:00+00') TO ('2026-04-01 00:00:00+00');
ALTER TABLE ONLY public.space_events ATTACH PARTITION public.space_events_2026_04 FOR VALUES FROM ('2026-04-01 00:00:00+00') TO ('2026-05-01 00:00:00+00');
ALTER TABLE ONLY public.space_events ATTACH PARTITION public.space_events_2026_05 FOR VALUES FROM ('2026-05-01 00:00:00+00') TO ('2026-06-01 00:00:00+00');
ALTER TABLE ONLY public.space_events ATTACH PARTITION public.space_events_2026_06 FOR VALUES FROM ('2026-06-01 00:00:00+00') TO ('2026-07-01 00:00:00+00');
ALTER TABLE ONLY public.space_events ATTACH PARTITION public.space_events_2026_07 FOR VALUES FROM ('2026-07-01 00:00:00+00') TO ('2026-08-01 00:00:00+00');
ALTER TABLE ONLY public.space_events ATTACH PARTITION public.space_events_2026_08 FOR VALUES FROM ('2026-08-01 00:00:00+00') TO ('2026-09-01 00:00:00+00');
ALTER TABLE ONLY public.space_events ATTACH PARTITION public.space_events_2026_09 FOR VALUES FROM ('2026-09-01 00:00:00+00') TO ('2026-10-01 00:00:00+00');
ALTER TABLE ONLY public.space_events ATTACH PARTITION public.space_events_2026_10 FOR VALUES FROM ('2026-10-01 00:00:00+00') TO ('2026-11-01 00:00:00+00');
ALTER TABLE ONLY public.space_events ATTACH PARTITION public.space_events_2026_11 FOR VALUES FROM ('2026-11-01 00:00:00+00') TO ('2026-12-01 00:00:00+00');
ALTER TABLE ONLY public.space_events ATTACH PARTITION public.space_events_2026_12 FOR VALUES FROM ('2026-12-01 00:00:00+00') TO ('2027-01-01 00:00:00+00');
ALTER TABLE ONLY public.space_events ATTACH PARTITION public.space_events_2027_01 FOR VALUES FROM ('2027-01-01 00:00:00+00') TO ('2027-02-01 00:00:00+00');
ALTER TABLE ONLY public.space_events ATTACH PARTITION public.space_events_2027_02 FOR VALUES FROM ('2027-02-01 00:00:00+00') TO ('2027-03-01 00:00:00+00');
ALTER TABLE ONLY public.space_events ATTACH PARTITION public.space_events_2027_03 FOR VALUES FROM ('2027-03-01 00:00:00+00') TO ('2027-04-01 00:00:00+00');
ALTER TABLE ONLY public.space_events ATTACH PARTITION public.space_events_2027_04 FOR VALUES FROM ('2027-04-01 00:00:00+00') TO ('2027-05-01 00:00:00+00');
ALTER TABLE ONLY public.space_events ATTACH PARTITION public.space_events_2027_05 FOR VALUES FROM ('2027-05-01 00:00:00+00') TO ('2027-06-01 00:00:00+00');
ALTER TABLE ONLY public.space_events ATTACH PARTITION public.space_events_2027_06 FOR VALUES FROM ('2027-06-01 00:00:00+00') TO ('2027-07-01 00:00:00+00');
ALTER TABLE ONLY public.space_events ATTACH PARTITION public.space_events_2027_07 FOR VALUES FROM ('2027-07-01 00:00:00+00') TO ('2027-08-01 00:00:00+00');
ALTER TABLE ONLY public.space_events ATTACH PARTITION public.space_events_2027_08 FOR VALUES FROM ('2027-08-01 00:00:00+00') TO ('2027-09-01 00:00:00+00');
ALTER TABLE ONLY public.space_events ATTACH PARTITION public.space_events_2027_09 FOR VALUES FROM ('2027-09-01 00:00:00+00') TO ('2027-10-01 00:00:00+00');
ALTER TABLE ONLY public.space_events ATTACH PARTITION public.space_events_2027_10 FOR VALUES FROM ('2027-10-01 00:00:00+00') TO ('2027-11-01 00:00:00+00');
ALTER TABLE ONLY public.space_events ATTACH PARTITION public.space_events_2027_11 FOR VALUES FROM ('2027-11-01 00:00:00+00') TO ('2027-12-01 00:00:00+00');
ALTER TABLE ONLY public.space_events ATTACH PARTITION public.space_events_2027_12 FOR VALUES FROM ('2027-12-01 00:00:00+00') TO ('2028-01-01 00:00:00+00');
ALTER TABLE ONLY public.audit_log ALTER COLUMN id SET DEFAULT nextval('public.audit_log_id_seq'::regclass);
ALTER TABLE ONLY public.dead_letters ALTER COLUMN id SET DEFAULT nextval('public.dead_letters_id_seq'::regclass);
ALTER TABLE ONLY public.accounts
    ADD CONSTRAINT accounts_phone_unique UNIQUE (phone);
ALTER TABLE ONLY public.accounts
    ADD CONSTRAINT accounts_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.anomalies
    ADD CONSTRAINT anomalies_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.audit_log
    ADD CONSTRAINT audit_log_pkey PRIMARY KEY (id, at);
ALTER TABLE ONLY public.auth_sessions
    ADD CONSTRAINT auth_sessions_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.bill_events
    ADD CONSTRAINT bill_events_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.bills
    ADD CONSTRAINT bills_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.calendars
    ADD CONSTRAINT calendars_pkey PRIMARY KEY (version);
ALTER TABLE ONLY public.calendars
    ADD CONSTRAINT calendars_seq_key UNIQUE (seq);
ALTER TABLE ONLY public.camera_pushes
    ADD CONSTRAINT camera_pushes_pkey PRIMARY KEY (device_id, push_key);
ALTER TABLE ONLY public.camera_pushes
    ADD CONSTRAINT camera_pushes_seq_key UNIQUE (device_id, seq);
ALTER TABLE ONLY public.camera_seqs
    ADD CONSTRAINT camera_seqs_pkey PRIMARY KEY (device_id);
ALTER TABLE ONLY public.case_events
    ADD CONSTRAINT case_events_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.case_full_lots
    ADD CONSTRAINT case_full_lots_pkey PRIMARY KEY (lot_id);
ALTER TABLE ONLY public.case_notifications
    ADD CONSTRAINT case_notifications_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.case_photos
    ADD CONSTRAINT case_photos_pkey PRIMARY KEY (case_id, ref);
ALTER TABLE ONLY public.case_reports
    ADD CONSTRAINT case_reports_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.case_rule_sets
    ADD CONSTRAINT case_rule_sets_pkey PRIMARY KEY (version);
ALTER TABLE ONLY public.case_tasks
    ADD CONSTRAINT case_tasks_pkey PRIMARY KEY (case_id, holder);
ALTER TABLE ONLY public.cases
    ADD CONSTRAINT cases_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.city_rollups
    ADD CONSTRAINT city_rollups_pkey PRIMARY KEY (scope, step, bucket);
ALTER TABLE ONLY public.contactless_deductions
    ADD CONSTRAINT contactless_deductions_attempt_unique UNIQUE (attempt_id);
ALTER TABLE ONLY public.contactless_deductions
    ADD CONSTRAINT contactless_deductions_bill_unique UNIQUE (bill_id);
ALTER TABLE ONLY public.contactless_deductions
    ADD CONSTRAINT contactless_deductions_parking_unique UNIQUE (out_parking_no);
ALTER TABLE ONLY public.contactless_deductions
    ADD CONSTRAINT contactless_deductions_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.contactless_mandates
    ADD CONSTRAINT contactless_mandates_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.dead_letters
    ADD CONSTRAINT dead_letters_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.dead_letters
    ADD CONSTRAINT dead_letters_source_key UNIQUE (source);
ALTER TABLE ONLY public.device_clocks
    ADD CONSTRAINT device_clocks_pkey PRIMARY KEY (device_id);
ALTER TABLE ONLY public.device_events
    ADD CONSTRAINT device_events_pkey PRIMARY KEY (device_id, seq);
ALTER TABLE ONLY public.device_watermarks
    ADD CONSTRAINT device_watermarks_pkey PRIMARY KEY (device_id);
ALTER TABLE ONLY public.devices
    ADD CONSTRAINT devices_pkey PRIMARY KEY (device_id);
ALTER TABLE ONLY public.discrepancies
    ADD CONSTRAINT discrepancies_dedup_key UNIQUE (provider, dedup_key);
ALTER TABLE ONLY public.discrepancies
    ADD CONSTRAINT discrepancies_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.disputes
    ADD CONSTRAINT disputes_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.districts
    ADD CONSTRAINT districts_name_key UNIQUE (name);
ALTER TABLE ONLY public.districts
    ADD CONSTRAINT districts_pkey PRIMARY KEY (code);
ALTER TABLE ONLY public.exempt_plate_kinds
    ADD CONSTRAINT exempt_plate_kinds_company_kind_key UNIQUE NULLS NOT DISTINCT (company_id, kind);
ALTER TABLE ONLY public.idempotency_keys
    ADD CONSTRAINT idempotency_keys_pkey PRIMARY KEY (scope, key);
ALTER TABLE ONLY public.lanes
    ADD CONSTRAINT lanes_pkey PRIMARY KEY (lot_id, lane_id);
ALTER TABLE ONLY public.ledger_accounts
    ADD CONSTRAINT ledger_accounts_pkey PRIMARY KEY (code);
ALTER TABLE ONLY public.ledger_postings
    ADD CONSTRAINT ledger_postings_pkey PRIMARY KEY (transaction_id, line);
ALTER TABLE ONLY public.ledger_transactions
    ADD CONSTRAINT ledger_transactions_event_unique UNIQUE (kind, idempotency_key);
ALTER TABLE ONLY public.ledger_transactions
    ADD CONSTRAINT ledger_transactions_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.ledger_transactions
    ADD CONSTRAINT ledger_transactions_seq_key UNIQUE (seq);
ALTER TABLE ONLY public.lot_camera_sources
    ADD CONSTRAINT lot_camera_sources_pkey PRIMARY KEY (lot_id, network);
ALTER TABLE ONLY public.lot_group_members
    ADD CONSTRAINT lot_group_members_pkey PRIMARY KEY (group_id, lot_id);
ALTER TABLE ONLY public.lot_groups
    ADD CONSTRAINT lot_groups_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.lot_tariffs
    ADD CONSTRAINT lot_tariffs_pkey PRIMARY KEY (lot_id, vehicle_class);
ALTER TABLE ONLY public.lots
    ADD CONSTRAINT lots_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.monthly_passes
    ADD CONSTRAINT monthly_passes_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.operator_companies
    ADD CONSTRAINT operator_companies_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.passages
    ADD CONSTRAINT passages_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.passages_2026_01
    ADD CONSTRAINT passages_2026_01_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.passages_2026_02
    ADD CONSTRAINT passages_2026_02_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.passages_2026_03
    ADD CONSTRAINT passages_2026_03_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.passages_2026_04
    ADD CONSTRAINT passages_2026_04_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.passages_2026_05
    ADD CONSTRAINT passages_2026_05_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.passages_2026_06
    ADD CONSTRAINT passages_2026_06_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.passages_2026_07
    ADD CONSTRAINT passages_2026_07_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.passages_2026_08
    ADD CONSTRAINT passages_2026_08_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.passages_2026_09
    ADD CONSTRAINT passages_2026_09_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.passages_2026_10
    ADD CONSTRAINT passages_2026_10_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.passages_2026_11
    ADD CONSTRAINT passages_2026_11_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.passages_2026_12
    ADD CONSTRAINT passages_2026_12_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.passages_2027_01
    ADD CONSTRAINT passages_2027_01_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.passages_2027_02
    ADD CONSTRAINT passages_2027_02_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.passages_2027_03
    ADD CONSTRAINT passages_2027_03_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.passages_2027_04
    ADD CONSTRAINT passages_2027_04_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.passages_2027_05
    ADD CONSTRAINT passages_2027_05_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.passages_2027_06
    ADD CONSTRAINT passages_2027_06_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.passages_2027_07
    ADD CONSTRAINT passages_2027_07_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.passages_2027_08
    ADD CONSTRAINT passages_2027_08_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.passages_2027_09
    ADD CONSTRAINT passages_2027_09_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.passages_2027_10
    ADD CONSTRAINT passages_2027_10_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.passages_2027_11
    ADD CONSTRAINT passages_2027_11_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.passages_2027_12
    ADD CONSTRAINT passages_2027_12_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.payment_anomalies
    ADD CONSTRAINT payment_anomalies_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.payment_anomalies
    ADD CONSTRAINT payment_anomalies_unique UNIQUE (kind, dedup_key);
ALTER TABLE ONLY public.payment_attempts
    ADD CONSTRAINT payment_attempts_idempotency_unique UNIQUE (idempotency_scope, idempotency_key);
ALTER TABLE ONLY public.payment_attempts
    ADD CONSTRAINT payment_attempts_out_trade_no_unique UNIQUE (out_trade_no);
ALTER TABLE ONLY public.payment_attempts
    ADD CONSTRAINT payment_attempts_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.payment_bills
    ADD CONSTRAINT payment_bills_pkey PRIMARY KEY (attempt_id, bill_id);
ALTER TABLE ONLY public.payment_notifications
    ADD CONSTRAINT payment_notifications_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.payment_notifications
    ADD CONSTRAINT payment_notifications_unique UNIQUE (provider, notification_id);
ALTER TABLE ONLY public.plate_blacklist
    ADD CONSTRAINT plate_blacklist_pkey PRIMARY KEY (plate);
ALTER TABLE ONLY public.plate_claims
    ADD CONSTRAINT plate_claims_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.plate_exemptions
    ADD CONSTRAINT plate_exemptions_company_plate_key UNIQUE NULLS NOT DISTINCT (company_id, plate);
ALTER TABLE ONLY public.plate_violations
    ADD CONSTRAINT plate_violations_case_id_key UNIQUE (case_id);
ALTER TABLE ONLY public.plate_violations
    ADD CONSTRAINT plate_violations_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.reconciliation_pool
    ADD CONSTRAINT reconciliation_pool_pkey PRIMARY KEY (provider, kind, match_key);
ALTER TABLE ONLY public.reconciliation_runs
    ADD CONSTRAINT reconciliation_runs_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.refresh_tokens
    ADD CONSTRAINT refresh_tokens_pkey PRIMARY KEY (jti);
ALTER TABLE ONLY public.refund_requests
    ADD CONSTRAINT refund_requests_out_refund_no_unique UNIQUE (out_refund_no);
ALTER TABLE ONLY public.refund_requests
    ADD CONSTRAINT refund_requests_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.retention_runs
    ADD CONSTRAINT retention_runs_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);
ALTER TABLE ONLY public.sessions_open
    ADD CONSTRAINT sessions_open_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.sessions
    ADD CONSTRAINT sessions_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.sessions_unsorted
    ADD CONSTRAINT sessions_unsorted_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.space_events
    ADD CONSTRAINT space_events_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_events_2026_01
    ADD CONSTRAINT space_events_2026_01_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_events_2026_02
    ADD CONSTRAINT space_events_2026_02_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_events_2026_03
    ADD CONSTRAINT space_events_2026_03_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_events_2026_04
    ADD CONSTRAINT space_events_2026_04_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_events_2026_05
    ADD CONSTRAINT space_events_2026_05_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_events_2026_06
    ADD CONSTRAINT space_events_2026_06_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_events_2026_07
    ADD CONSTRAINT space_events_2026_07_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_events_2026_08
    ADD CONSTRAINT space_events_2026_08_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_events_2026_09
    ADD CONSTRAINT space_events_2026_09_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_events_2026_10
    ADD CONSTRAINT space_events_2026_10_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_events_2026_11
    ADD CONSTRAINT space_events_2026_11_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_events_2026_12
    ADD CONSTRAINT space_events_2026_12_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_events_2027_01
    ADD CONSTRAINT space_events_2027_01_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_events_2027_02
    ADD CONSTRAINT space_events_2027_02_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_events_2027_03
    ADD CONSTRAINT space_events_2027_03_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_events_2027_04
    ADD CONSTRAINT space_events_2027_04_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_events_2027_05
    ADD CONSTRAINT space_events_2027_05_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_events_2027_06
    ADD CONSTRAINT space_events_2027_06_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_events_2027_07
    ADD CONSTRAINT space_events_2027_07_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_events_2027_08
    ADD CONSTRAINT space_events_2027_08_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_events_2027_09
    ADD CONSTRAINT space_events_2027_09_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_events_2027_10
    ADD CONSTRAINT space_events_2027_10_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_events_2027_11
    ADD CONSTRAINT space_events_2027_11_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_events_2027_12
    ADD CONSTRAINT space_events_2027_12_pkey PRIMARY KEY (device_id, seq, received_at);
ALTER TABLE ONLY public.space_states
    ADD CONSTRAINT space_states_pkey PRIMARY KEY (lot_id, space_id);
ALTER TABLE ONLY public.spaces
    ADD CONSTRAINT spaces_pkey PRIMARY KEY (lot_id, space_id);
ALTER TABLE ONLY public.statement_imports
    ADD CONSTRAINT statement_imports_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.statement_lines
    ADD CONSTRAINT statement_lines_pkey PRIMARY KEY (import_id, line_no);
ALTER TABLE ONLY public.tariff_versions
    ADD CONSTRAINT tariff_versions_effective_unique UNIQUE (tariff_id, effective_from);
ALTER TABLE ONLY public.tariff_versions
    ADD CONSTRAINT tariff_versions_pkey PRIMARY KEY (tariff_id, version);
ALTER TABLE ONLY public.tariffs
    ADD CONSTRAINT tariffs_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.vehicle_class_overrides
    ADD CONSTRAINT vehicle_class_overrides_pkey PRIMARY KEY (plate);
ALTER TABLE ONLY public.vehicles
    ADD CONSTRAINT vehicles_pkey PRIMARY KEY (id);
CREATE INDEX anomalies_device_open_idx ON public.anomalies USING btree (device_id) WHERE (status = 'open'::text);
CREATE UNIQUE INDEX anomalies_one_open_clock_skew ON public.anomalies USING btree (device_id) WHERE ((kind = 'device_clock_skew'::text) AND (status = 'open'::text));
CREATE INDEX anomalies_open_idx ON public.anomalies USING btree (kind, created_at) WHERE (status = 'open'::text);
CREATE INDEX anomalies_open_session_idx ON public.anomalies USING btree (session_id, kind) WHERE ((status = 'open'::text) AND (session_id IS NOT NULL));
CREATE INDEX audit_log_target_idx ON ONLY public.audit_log USING btree (target, at);
CREATE INDEX auth_sessions_account_idx ON public.auth_sessions USING btree (account_id) WHERE (revoked_at IS NULL);
CREATE INDEX bill_events_bill_idx ON public.bill_events USING btree (bill_id, id);
CREATE INDEX bill_events_ledger_idx ON public.bill_events USING btree (ledger_transaction_id) WHERE (ledger_transaction_id IS NOT NULL);
CREATE INDEX bills_arrears_idx ON public.bills USING btree (closed_at) WHERE (kind <> 'prepay'::text);
CREATE INDEX bills_created_at_idx ON public.bills USING btree (created_at);
CREATE INDEX bills_lot_idx ON public.bills USING btree (lot_id);
CREATE UNIQUE INDEX bills_one_stay_bill_per_session ON public.bills USING btree (session_id) WHERE (kind = 'stay'::text);
CREATE INDEX bills_owed_by_account_idx ON public.bills USING btree (account_id, closed_at) WHERE ((paid_at IS NULL) AND (status = ANY (ARRAY['open'::text, 'paying'::text, 'disputed'::text])) AND (account_id IS NOT NULL));
CREATE INDEX bills_owed_by_plate_idx ON public.bills USING btree (plate, closed_at) WHERE ((paid_at IS NULL) AND (status = ANY (ARRAY['open'::text, 'paying'::text, 'disputed'::text])) AND (plate IS NOT NULL));
CREATE INDEX bills_paid_at_idx ON public.bills USING btree (paid_at) WHERE (paid_at IS NOT NULL);
CREATE INDEX bills_prepay_idx ON public.bills USING btree (session_id) WHERE (kind = 'prepay'::text);
CREATE INDEX bills_tariff_idx ON public.bills USING btree (tariff_id, tariff_version);
CREATE INDEX camera_pushes_received ON public.camera_pushes USING btree (received_at);
CREATE INDEX case_events_case ON public.case_events USING btree (case_id, id);
CREATE INDEX case_notifications_case ON public.case_notifications USING btree (case_id);
CREATE INDEX case_notifications_undelivered ON public.case_notifications USING btree (COALESCE(next_attempt_at, at), id) WHERE (delivery = 'pending'::text);
CREATE INDEX case_reports_account ON public.case_reports USING btree (account_id, at);
CREATE INDEX case_reports_case ON public.case_reports USING btree (case_id);
CREATE INDEX case_reports_plate ON public.case_reports USING btree (plate, at) WHERE (plate IS NOT NULL);
CREATE INDEX case_tasks_holder ON public.case_tasks USING btree (holder) WHERE (state <> 'done'::text);
CREATE INDEX cases_holder_open ON public.cases USING btree (holder, received_at) WHERE (state <> ALL (ARRAY['resolved'::text, 'closed'::text]));
CREATE UNIQUE INDEX cases_one_open_per_source ON public.cases USING btree (source, source_ref) WHERE ((source_ref IS NOT NULL) AND (state <> ALL (ARRAY['resolved'::text, 'closed'::text])));
CREATE INDEX cases_open_clocks ON public.cases USING btree (LEAST(accept_due_at, resolve_due_at)) WHERE (state <> ALL (ARRAY['resolved'::text, 'closed'::text]));
CREATE INDEX cases_place ON public.cases USING btree (lot_id, category, received_at);
CREATE INDEX cases_received ON public.cases USING btree (received_at);
CREATE INDEX cases_reporter ON public.cases USING btree (reporter_account_id, received_at) WHERE (reporter_account_id IS NOT NULL);
CREATE INDEX cases_resolved ON public.cases USING btree (resolved_at) WHERE (state = 'resolved'::text);
CREATE INDEX contactless_deductions_bill_idx ON public.contactless_deductions USING btree (bill_id) WHERE (status = 'succeeded'::text);
CREATE INDEX contactless_mandates_account_idx ON public.contactless_mandates USING btree (account_id) WHERE (account_id IS NOT NULL);
CREATE UNIQUE INDEX contactless_mandates_live_idx ON public.contactless_mandates USING btree (provider, plate) WHERE (state <> 'revoked'::text);
CREATE INDEX dead_letters_received_idx ON public.dead_letters USING btree (received_at);
CREATE INDEX devices_lot_idx ON public.devices USING btree (lot_id);
CREATE UNIQUE INDEX devices_one_gate_per_lane ON public.devices USING btree (lot_id, lane_id) WHERE ((kind = 'gate'::text) AND (revoked_at IS NULL));
CREATE UNIQUE INDEX devices_one_live_camera ON public.devices USING btree (vendor, serial) WHERE ((revoked_at IS NULL) AND (vendor IS NOT NULL));
CREATE UNIQUE INDEX devices_one_sensor_per_space ON public.devices USING btree (lot_id, space_id) WHERE ((kind = 'sensor'::text) AND (revoked_at IS NULL));
CREATE INDEX discrepancies_day_idx ON public.discrepancies USING btree (provider, business_date, kind);
CREATE INDEX discrepancies_open_idx ON public.discrepancies USING btree (status, found_at) WHERE (status = 'open'::text);
CREATE UNIQUE INDEX disputes_one_open_per_bill_idx ON public.disputes USING btree (bill_id) WHERE (status = 'open'::text);
CREATE INDEX disputes_open_idx ON public.disputes USING btree (opened_at) WHERE (status = 'open'::text);
CREATE INDEX disputes_opened_at_idx ON public.disputes USING btree (opened_at);
CREATE INDEX idempotency_keys_created_idx ON public.idempotency_keys USING btree (created_at);
CREATE INDEX ledger_postings_account_idx ON public.ledger_postings USING btree (account_code, currency);
CREATE INDEX ledger_transactions_correlation_idx ON public.ledger_transactions USING btree (correlation_id);
CREATE INDEX lot_group_members_lot_idx ON public.lot_group_members USING btree (lot_id);
CREATE INDEX lot_tariffs_tariff_idx ON public.lot_tariffs USING btree (tariff_id);
CREATE INDEX lots_company_idx ON public.lots USING btree (company_id, id);
CREATE INDEX lots_district_idx ON public.lots USING btree (district_code);
CREATE INDEX monthly_passes_plate_idx ON public.monthly_passes USING btree (plate) WHERE (revoked_at IS NULL);
CREATE INDEX passages_lot_idx ON ONLY public.passages USING btree (lot_id, received_at);
CREATE INDEX passages_2026_01_lot_id_received_at_idx ON public.passages_2026_01 USING btree (lot_id, received_at);
CREATE INDEX passages_plate_idx ON ONLY public.passages USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX passages_2026_01_plate_received_at_idx ON public.passages_2026_01 USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX passages_2026_02_lot_id_received_at_idx ON public.passages_2026_02 USING btree (lot_id, received_at);
CREATE INDEX passages_2026_02_plate_received_at_idx ON public.passages_2026_02 USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX passages_2026_03_lot_id_received_at_idx ON public.passages_2026_03 USING btree (lot_id, received_at);
CREATE INDEX passages_2026_03_plate_received_at_idx ON public.passages_2026_03 USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX passages_2026_04_lot_id_received_at_idx ON public.passages_2026_04 USING btree (lot_id, received_at);
CREATE INDEX passages_2026_04_plate_received_at_idx ON public.passages_2026_04 USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX passages_2026_05_lot_id_received_at_idx ON public.passages_2026_05 USING btree (lot_id, received_at);
CREATE INDEX passages_2026_05_plate_received_at_idx ON public.passages_2026_05 USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX passages_2026_06_lot_id_received_at_idx ON public.passages_2026_06 USING btree (lot_id, received_at);
CREATE INDEX passages_2026_06_plate_received_at_idx ON public.passages_2026_06 USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX passages_2026_07_lot_id_received_at_idx ON public.passages_2026_07 USING btree (lot_id, received_at);
CREATE INDEX passages_2026_07_plate_received_at_idx ON public.passages_2026_07 USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX passages_2026_08_lot_id_received_at_idx ON public.passages_2026_08 USING btree (lot_id, received_at);
CREATE INDEX passages_2026_08_plate_received_at_idx ON public.passages_2026_08 USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX passages_2026_09_lot_id_received_at_idx ON public.passages_2026_09 USING btree (lot_id, received_at);
CREATE INDEX passages_2026_09_plate_received_at_idx ON public.passages_2026_09 USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX passages_2026_10_lot_id_received_at_idx ON public.passages_2026_10 USING btree (lot_id, received_at);
CREATE INDEX passages_2026_10_plate_received_at_idx ON public.passages_2026_10 USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX passages_2026_11_lot_id_received_at_idx ON public.passages_2026_11 USING btree (lot_id, received_at);
CREATE INDEX passages_2026_11_plate_received_at_idx ON public.passages_2026_11 USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX passages_2026_12_lot_id_received_at_idx ON public.passages_2026_12 USING btree (lot_id, received_at);
CREATE INDEX passages_2026_12_plate_received_at_idx ON public.passages_2026_12 USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX passages_2027_01_lot_id_received_at_idx ON public.passages_2027_01 USING btree (lot_id, received_at);
CREATE INDEX passages_2027_01_plate_received_at_idx ON public.passages_2027_01 USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX passages_2027_02_lot_id_received_at_idx ON public.passages_2027_02 USING btree (lot_id, received_at);
CREATE INDEX passages_2027_02_plate_received_at_idx ON public.passages_2027_02 USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX passages_2027_03_lot_id_received_at_idx ON public.passages_2027_03 USING btree (lot_id, received_at);
CREATE INDEX passages_2027_03_plate_received_at_idx ON public.passages_2027_03 USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX passages_2027_04_lot_id_received_at_idx ON public.passages_2027_04 USING btree (lot_id, received_at);
CREATE INDEX passages_2027_04_plate_received_at_idx ON public.passages_2027_04 USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX passages_2027_05_lot_id_received_at_idx ON public.passages_2027_05 USING btree (lot_id, received_at);
CREATE INDEX passages_2027_05_plate_received_at_idx ON public.passages_2027_05 USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX passages_2027_06_lot_id_received_at_idx ON public.passages_2027_06 USING btree (lot_id, received_at);
CREATE INDEX passages_2027_06_plate_received_at_idx ON public.passages_2027_06 USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX passages_2027_07_lot_id_received_at_idx ON public.passages_2027_07 USING btree (lot_id, received_at);
CREATE INDEX passages_2027_07_plate_received_at_idx ON public.passages_2027_07 USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX passages_2027_08_lot_id_received_at_idx ON public.passages_2027_08 USING btree (lot_id, received_at);
CREATE INDEX passages_2027_08_plate_received_at_idx ON public.passages_2027_08 USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX passages_2027_09_lot_id_received_at_idx ON public.passages_2027_09 USING btree (lot_id, received_at);
CREATE INDEX passages_2027_09_plate_received_at_idx ON public.passages_2027_09 USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX passages_2027_10_lot_id_received_at_idx ON public.passages_2027_10 USING btree (lot_id, received_at);
CREATE INDEX passages_2027_10_plate_received_at_idx ON public.passages_2027_10 USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX passages_2027_11_lot_id_received_at_idx ON public.passages_2027_11 USING btree (lot_id, received_at);
CREATE INDEX passages_2027_11_plate_received_at_idx ON public.passages_2027_11 USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX passages_2027_12_lot_id_received_at_idx ON public.passages_2027_12 USING btree (lot_id, received_at);
CREATE INDEX passages_2027_12_plate_received_at_idx ON public.passages_2027_12 USING btree (plate, received_at) WHERE (plate IS NOT NULL);
CREATE INDEX payment_anomalies_open_idx ON public.payment_anomalies USING btree (created_at) WHERE (status = 'open'::text);
CREATE INDEX payment_anomalies_order_idx ON public.payment_anomalies USING btree (provider, out_trade_no);
CREATE INDEX payment_attempts_settled_idx ON public.payment_attempts USING btree (provider, settled_at) WHERE (status = 'paid'::text);
CREATE INDEX payment_attempts_sweep_idx ON public.payment_attempts USING btree (created_at) WHERE ((status = 'pending'::text) OR recheck);
CREATE INDEX payment_bills_bill_idx ON public.payment_bills USING btree (bill_id);
CREATE INDEX payment_notifications_order_idx ON public.payment_notifications USING btree (provider, out_trade_no);
CREATE INDEX plate_claims_claimant_idx ON public.plate_claims USING btree (claimant_account_id, id);
CREATE UNIQUE INDEX plate_claims_one_pending ON public.plate_claims USING btree (plate, claimant_account_id) WHERE (status = 'pending'::text);
CREATE INDEX plate_claims_status_idx ON public.plate_claims USING btree (status, id);
CREATE INDEX plate_violations_plate ON public.plate_violations USING btree (plate, at);
CREATE INDEX reconciliation_pool_waiting_idx ON public.reconciliation_pool USING btree (provider, business_date) WHERE (status = 'waiting'::text);
CREATE INDEX reconciliation_runs_day_idx ON public.reconciliation_runs USING btree (provider, business_date, started_at);
CREATE UNIQUE INDEX refresh_tokens_access_jti_idx ON public.refresh_tokens USING btree (access_jti);
CREATE INDEX refresh_tokens_session_idx ON public.refresh_tokens USING btree (session_id);
CREATE INDEX refund_requests_bill_idx ON public.refund_requests USING btree (bill_id) WHERE (bill_id IS NOT NULL);
CREATE INDEX refund_requests_pending_idx ON public.refund_requests USING btree (created_at) WHERE (status = 'approved'::text);
CREATE INDEX refund_requests_refunded_idx ON public.refund_requests USING btree (provider, refunded_at) WHERE (status = 'refunded'::text);
CREATE INDEX sessions_account_idx ON ONLY public.sessions USING btree (account_id, entry_at) WHERE (account_id IS NOT NULL);
CREATE INDEX sessions_entry_at_idx ON ONLY public.sessions USING btree (entry_at);
CREATE INDEX sessions_exit_at_idx ON ONLY public.sessions USING btree (exit_at) WHERE (status = 'closed'::text);
CREATE INDEX sessions_lot_open_idx ON ONLY public.sessions USING btree (lot_id) WHERE (status = 'open'::text);
CREATE UNIQUE INDEX sessions_one_open_per_plate ON public.sessions_open USING btree (plate);
CREATE UNIQUE INDEX sessions_one_open_unplated_per_account ON public.sessions_open USING btree (account_id) WHERE ((plate IS NULL) AND (account_id IS NOT NULL));
CREATE INDEX sessions_plate_idx ON ONLY public.sessions USING btree (plate, entry_at);
CREATE INDEX sessions_unsorted_account_id_entry_at_idx ON public.sessions_unsorted USING btree (account_id, entry_at) WHERE (account_id IS NOT NULL);
CREATE INDEX sessions_unsorted_entry_at_idx ON public.sessions_unsorted USING btree (entry_at);
CREATE INDEX sessions_unsorted_exit_at_idx ON public.sessions_unsorted USING btree (exit_at) WHERE (status = 'closed'::text);
CREATE INDEX sessions_unsorted_lot_id_idx ON public.sessions_unsorted USING btree (lot_id) WHERE (status = 'open'::text);
CREATE INDEX sessions_unsorted_plate_entry_at_idx ON public.sessions_unsorted USING btree (plate, entry_at);
CREATE INDEX space_events_space_idx ON ONLY public.space_events USING btree (lot_id, space_id, received_at);
CREATE INDEX space_events_2026_01_lot_id_space_id_received_at_idx ON public.space_events_2026_01 USING btree (lot_id, space_id, received_at);
CREATE INDEX space_events_2026_02_lot_id_space_id_received_at_idx ON public.space_events_2026_02 USING btree (lot_id, space_id, received_at);
CREATE INDEX space_events_2026_03_lot_id_space_id_received_at_idx ON public.space_events_2026_03 USING btree (lot_id, space_id, received_at);
CREATE INDEX space_events_2026_04_lot_id_space_id_received_at_idx ON public.space_events_2026_04 USING btree (lot_id, space_id, received_at);
CREATE INDEX space_events_2026_05_lot_id_space_id_received_at_idx ON public.space_events_2026_05 USING btree (lot_id, space_id, received_at);
CREATE INDEX space_events_2026_06_lot_id_space_id_received_at_idx ON public.space_events_2026_06 USING btree (lot_id, space_id, received_at);
CREATE INDEX space_events_2026_07_lot_id_space_id_received_at_idx ON public.space_events_2026_07 USING btree (lot_id, space_id, received_at);
CREATE INDEX space_events_2026_08_lot_id_space_id_received_at_idx ON public.space_events_2026_08 USING btree (lot_id, space_id, received_at);
CREATE INDEX space_events_2026_09_lot_id_space_id_received_at_idx ON public.space_events_2026_09 USING btree (lot_id, space_id, received_at);
CREATE INDEX space_events_2026_10_lot_id_space_id_received_at_idx ON public.space_events_2026_10 USING btree (lot_id, space_id, received_at);
CREATE INDEX space_events_2026_11_lot_id_space_id_received_at_idx ON public.space_events_2026_11 USING btree (lot_id, space_id, received_at);
CREATE INDEX space_events_2026_12_lot_id_space_id_received_at_idx ON public.space_events_2026_12 USING btree (lot_id, space_id, received_at);
CREATE INDEX space_events_2027_01_lot_id_space_id_received_at_idx ON public.space_events_2027_01 USING btree (lot_id, space_id, received_at);
CREATE INDEX space_events_2027_02_lot_id_space_id_received_at_idx ON public.space_events_2027_02 USING btree (lot_id, space_id, received_at);
CREATE INDEX space_events_2027_03_lot_id_space_id_received_at_idx ON public.space_events_2027_03 USING btree (lot_id, space_id, received_at);
CREATE INDEX space_events_2027_04_lot_id_space_id_received_at_idx ON public.space_events_2027_04 USING btree (lot_id, space_id, received_at);
CREATE INDEX space_events_2027_05_lot_id_space_id_received_at_idx ON public.space_events_2027_05 USING btree (lot_id, space_id, received_at);
CREATE INDEX space_events_2027_06_lot_id_space_id_received_at_idx ON public.space_events_2027_06 USING btree (lot_id, space_id, received_at);
CREATE INDEX space_events_2027_07_lot_id_space_id_received_at_idx ON public.space_events_2027_07 USING btree (lot_id, space_id, received_at);
CREATE INDEX space_events_2027_08_lot_id_space_id_received_at_idx ON public.space_events_2027_08 USING btree (lot_id, space_id, received_at);
CREATE INDEX space_events_2027_09_lot_id_space_id_received_at_idx ON public.space_events_2027_09 USING btree (lot_id, space_id, received_at);
CREATE INDEX space_events_2027_10_lot_id_space_id_received_at_idx ON public.space_events_2027_10 USING btree (lot_id, space_id, received_at);
CREATE INDEX space_events_2027_11_lot_id_space_id_received_at_idx ON public.space_events_2027_11 USING btree (lot_id, space_id, received_at);
CREATE INDEX space_events_2027_12_lot_id_space_id_received_at_idx ON public.space_events_2027_12 USING btree (lot_id, space_id, received_at);
CREATE UNIQUE INDEX statement_imports_current_idx ON public.statement_imports USING btree (provider, business_date) WHERE (replaced_at IS NULL);
CREATE INDEX vehicles_account_idx ON public.vehicles USING btree (account_id, bound_at) WHERE (released_at IS NULL);
CREATE UNIQUE INDEX vehicles_one_holder_per_plate ON public.vehicles USING btree (plate) WHERE (released_at IS NULL);
ALTER INDEX public.passages_lot_idx ATTACH PARTITION public.passages_2026_01_lot_id_received_at_idx;
ALTER INDEX public.passages_pkey ATTACH PARTITION public.passages_2026_01_pkey;
ALTER INDEX public.passages_plate_idx ATTACH PARTITION public.passages_2026_01_plate_received_at_idx;
ALTER INDEX public.passages_lot_idx ATTACH PARTITION public.passages_2026_02_lot_id_received_at_idx;
ALTER INDEX public.passages_pkey ATTACH PARTITION public.passages_2026_02_pkey;
ALTER INDEX public.passages_plate_idx ATTACH PARTITION public.passages_2026_02_plate_received_at_idx;
ALTER INDEX public.passages_lot_idx ATTACH PARTITION public.passages_2026_03_lot_id_received_at_idx;
ALTER INDEX public.passages_pkey ATTACH PARTITION public.passages_2026_03_pkey;
ALTER INDEX public.passages_plate_idx ATTACH PARTITION public.passages_2026_03_plate_received_at_idx;
ALTER INDEX public.passages_lot_idx ATTACH PARTITION public.passages_2026_04_lot_id_received_at_idx;
ALTER INDEX public.passages_pkey ATTACH PARTITION public.passages_2026_04_pkey;
ALTER INDEX public.passages_plate_idx ATTACH PARTITION public.passages_2026_04_plate_received_at_idx;
ALTER INDEX public.passages_lot_idx ATTACH PARTITION public.passages_2026_05_lot_id_received_at_idx;
ALTER INDEX public.passages_pkey ATTACH PARTITION public.passages_2026_05_pkey;
ALTER INDEX public.passages_plate_idx ATTACH PARTITION public.passages_2026_05_plate_received_at_idx;
ALTER INDEX public.passages_lot_idx ATTACH PARTITION public.passages_2026_06_lot_id_received_at_idx;
ALTER INDEX public.passages_pkey ATTACH PARTITION public.passages_2026_06_pkey;
ALTER INDEX public.passages_plate_idx ATTACH PARTITION public.passages_2026_06_plate_received_at_idx;
ALTER INDEX public.passages_lot_idx ATTACH PARTITION public.passages_2026_07_lot_id_received_at_idx;
ALTER INDEX public.passages_pkey ATTACH PARTITION public.passages_2026_07_pkey;
ALTER INDEX public.passages_plate_idx ATTACH PARTITION public.passages_2026_07_plate_received_at_idx;
ALTER INDEX public.passages_lot_idx ATTACH PARTITION public.passages_2026_08_lot_id_received_at_idx;
ALTER INDEX public.passages_pkey ATTACH PARTITION public.passages_2026_08_pkey;
ALTER INDEX public.passages_plate_idx ATTACH PARTITION public.passages_2026_08_plate_received_at_idx;
ALTER INDEX public.passages_lot_idx ATTACH PARTITION public.passages_2026_09_lot_id_received_at_idx;
ALTER INDEX public.passages_pkey ATTACH PARTITION public.passages_2026_09_pkey;
ALTER INDEX public.passages_plate_idx ATTACH PARTITION public.passages_2026_09_plate_received_at_idx;
ALTER INDEX public.passages_lot_idx ATTACH PARTITION public.passages_2026_10_lot_id_received_at_idx;
ALTER INDEX public.passages_pkey ATTACH PARTITION public.passages_2026_10_pkey;
ALTER INDEX public.passages_plate_idx ATTACH PARTITION public.passages_2026_10_plate_received_at_idx;
ALTER INDEX public.passages_lot_idx ATTACH PARTITION public.passages_2026_11_lot_id_received_at_idx;
ALTER INDEX public.passages_pkey ATTACH PARTITION public.passages_2026_11_pkey;
ALTER INDEX public.passages_plate_idx ATTACH PARTITION public.passages_2026_11_plate_received_at_idx;
ALTER INDEX public.passages_lot_idx ATTACH PARTITION public.passages_2026_12_lot_id_received_at_idx;
ALTER INDEX public.passages_pkey ATTACH PARTITION public.passages_2026_12_pkey;
ALTER INDEX public.passages_plate_idx ATTACH PARTITION public.passages_2026_12_plate_received_at_idx;
ALTER INDEX public.passages_lot_idx ATTACH PARTITION public.passages_2027_01_lot_id_received_at_idx;
ALTER INDEX public.passages_pkey ATTACH PARTITION public.passages_2027_01_pkey;
ALTER INDEX public.passages_plate_idx ATTACH PARTITION public.passages_2027_01_plate_received_at_idx;
ALTER INDEX public.passages_lot_idx ATTACH PARTITION public.passages_2027_02_lot_id_received_at_idx;
ALTER INDEX public.passages_pkey ATTACH PARTITION public.passages_2027_02_pkey;
ALTER INDEX public.passages_plate_idx ATTACH PARTITION public.passages_2027_02_plate_received_at_idx;
ALTER INDEX public.passages_lot_idx ATTACH PARTITION public.passages_2027_03_lot_id_received_at_idx;
ALTER INDEX public.passages_pkey ATTACH PARTITION public.passages_2027_03_pkey;
ALTER INDEX public.passages_plate_idx ATTACH PARTITION public.passages_2027_03_plate_received_at_idx;
ALTER INDEX public.passages_lot_idx ATTACH PARTITION public.passages_2027_04_lot_id_received_at_idx;
ALTER INDEX public.passages_pkey ATTACH PARTITION public.passages_2027_04_pkey;
ALTER INDEX public.passages_plate_idx ATTACH PARTITION public.passages_2027_04_plate_received_at_idx;
ALTER INDEX public.passages_lot_idx ATTACH PARTITION public.passages_2027_05_lot_id_received_at_idx;
ALTER INDEX public.passages_pkey ATTACH PARTITION public.passages_2027_05_pkey;
ALTER INDEX public.passages_plate_idx ATTACH PARTITION public.passages_2027_05_plate_received_at_idx;
ALTER INDEX public.passages_lot_idx ATTACH PARTITION public.passages_2027_06_lot_id_received_at_idx;
ALTER INDEX public.passages_pkey ATTACH PARTITION public.passages_2027_06_pkey;
ALTER INDEX public.passages_plate_idx ATTACH PARTITION public.passages_2027_06_plate_received_at_idx;
ALTER INDEX public.passages_lot_idx ATTACH PARTITION public.passages_2027_07_lot_id_received_at_idx;
ALTER INDEX public.passages_pkey ATTACH PARTITION public.passages_2027_07_pkey;
ALTER INDEX public.passages_plate_idx ATTACH PARTITION public.passages_2027_07_plate_received_at_idx;
ALTER INDEX public.passages_lot_idx ATTACH PARTITION public.passages_2027_08_lot_id_received_at_idx;
ALTER INDEX public.passages_pkey ATTACH PARTITION public.passages_2027_08_pkey;
ALTER INDEX public.passages_plate_idx ATTACH PARTITION public.passages_2027_08_plate_received_at_idx;
ALTER INDEX public.passages_lot_idx ATTACH PARTITION public.passages_2027_09_lot_id_received_at_idx;
ALTER INDEX public.passages_pkey ATTACH PARTITION public.passages_2027_09_pkey;
ALTER INDEX public.passages_plate_idx ATTACH PARTITION public.passages_2027_09_plate_received_at_idx;
ALTER INDEX public.passages_lot_idx ATTACH PARTITION public.passages_2027_10_lot_id_received_at_idx;
ALTER INDEX public.passages_pkey ATTACH PARTITION public.passages_2027_10_pkey;
ALTER INDEX public.passages_plate_idx ATTACH PARTITION public.passages_2027_10_plate_received_at_idx;
ALTER INDEX public.passages_lot_idx ATTACH PARTITION public.passages_2027_11_lot_id_received_at_idx;
ALTER INDEX public.passages_pkey ATTACH PARTITION public.passages_2027_11_pkey;
ALTER INDEX public.passages_plate_idx ATTACH PARTITION public.passages_2027_11_plate_received_at_idx;
ALTER INDEX public.passages_lot_idx ATTACH PARTITION public.passages_2027_12_lot_id_received_at_idx;
ALTER INDEX public.passages_pkey ATTACH PARTITION public.passages_2027_12_pkey;
ALTER INDEX public.passages_plate_idx ATTACH PARTITION public.passages_2027_12_plate_received_at_idx;
ALTER INDEX public.sessions_account_idx ATTACH PARTITION public.sessions_unsorted_account_id_entry_at_idx;
ALTER INDEX public.sessions_entry_at_idx ATTACH PARTITION public.sessions_unsorted_entry_at_idx;
ALTER INDEX public.sessions_exit_at_idx ATTACH PARTITION public.sessions_unsorted_exit_at_idx;
ALTER INDEX public.sessions_lot_open_idx ATTACH PARTITION public.sessions_unsorted_lot_id_idx;
ALTER INDEX public.sessions_pkey ATTACH PARTITION public.sessions_unsorted_pkey;
ALTER INDEX public.sessions_plate_idx ATTACH PARTITION public.sessions_unsorted_plate_entry_at_idx;
ALTER INDEX public.space_events_space_idx ATTACH PARTITION public.space_events_2026_01_lot_id_space_id_received_at_idx;
ALTER INDEX public.space_events_pkey ATTACH PARTITION public.space_events_2026_01_pkey;
ALTER INDEX public.space_events_space_idx ATTACH PARTITION public.space_events_2026_02_lot_id_space_id_received_at_idx;
ALTER INDEX public.space_events_pkey ATTACH PARTITION public.space_events_2026_02_pkey;
ALTER INDEX public.space_events_space_idx ATTACH PARTITION public.space_events_2026_03_lot_id_space_id_received_at_idx;
ALTER INDEX public.space_events_pkey ATTACH PARTITION public.space_events_2026_03_pkey;
ALTER INDEX public.space_events_space_idx ATTACH PARTITION public.space_events_2026_04_lot_id_space_id_received_at_idx;
ALTER INDEX public.space_events_pkey ATTACH PARTITION public.space_events_2026_04_pkey;
ALTER INDEX public.space_events_space_idx ATTACH PARTITION public.space_events_2026_05_lot_id_space_id_received_at_idx;
ALTER INDEX public.space_events_pkey ATTACH PARTITION public.space_events_2026_05_pkey;
ALTER INDEX public.space_events_space_idx ATTACH PARTITION public.space_events_2026_06_lot_id_space_id_received_at_idx;
ALTER INDEX public.space_events_pkey ATTACH PARTITION public.space_events_2026_06_pkey;
ALTER INDEX public.space_events_space_idx ATTACH PARTITION public.space_events_2026_07_lot_id_space_id_received_at_idx;
ALTER INDEX public.space_events_pkey ATTACH PARTITION public.space_events_2026_07_pkey;
ALTER INDEX public.space_events_space_idx ATTACH PARTITION public.space_events_2026_08_lot_id_space_id_received_at_idx;
ALTER INDEX public.space_events_pkey ATTACH PARTITION public.space_events_2026_08_pkey;
ALTER INDEX public.space_events_space_idx ATTACH PARTITION public.space_events_2026_09_lot_id_space_id_received_at_idx;
ALTER INDEX public.space_events_pkey ATTACH PARTITION public.space_events_2026_09_pkey;
ALTER INDEX public.space_events_space_idx ATTACH PARTITION public.space_events_2026_10_lot_id_space_id_received_at_idx;
ALTER INDEX public.space_events_pkey ATTACH PARTITION public.space_events_2026_10_pkey;
ALTER INDEX public.space_events_space_idx ATTACH PARTITION public.space_events_2026_11_lot_id_space_id_received_at_idx;
ALTER INDEX public.space_events_pkey ATTACH PARTITION public.space_events_2026_11_pkey;
ALTER INDEX public.space_events_space_idx ATTACH PARTITION public.space_events_2026_12_lot_id_space_id_received_at_idx;
ALTER INDEX public.space_events_pkey ATTACH PARTITION public.space_events_2026_12_pkey;
ALTER INDEX public.space_events_space_idx ATTACH PARTITION public.space_events_2027_01_lot_id_space_id_received_at_idx;
ALTER INDEX public.space_events_pkey ATTACH PARTITION public.space_events_2027_01_pkey;
ALTER INDEX public.space_events_space_idx ATTACH PARTITION public.space_events_2027_02_lot_id_space_id_received_at_idx;
ALTER INDEX public.space_events_pkey ATTACH PARTITION public.space_events_2027_02_pkey;
ALTER INDEX public.space_events_space_idx ATTACH PARTITION public.space_events_2027_03_lot_id_space_id_received_at_idx;
ALTER INDEX public.space_events_pkey ATTACH PARTITION public.space_events_2027_03_pkey;
ALTER INDEX public.space_events_space_idx ATTACH PARTITION public.space_events_2027_04_lot_id_space_id_received_at_idx;
ALTER INDEX public.space_events_pkey ATTACH PARTITION public.space_events_2027_04_pkey;
ALTER INDEX public.space_events_space_idx ATTACH PARTITION public.space_events_2027_05_lot_id_space_id_received_at_idx;
ALTER INDEX public.space_events_pkey ATTACH PARTITION public.space_events_2027_05_pkey;
ALTER INDEX public.space_events_space_idx ATTACH PARTITION public.space_events_2027_06_lot_id_space_id_received_at_idx;
ALTER INDEX public.space_events_pkey ATTACH PARTITION public.space_events_2027_06_pkey;
ALTER INDEX public.space_events_space_idx ATTACH PARTITION public.space_events_2027_07_lot_id_space_id_received_at_idx;
ALTER INDEX public.space_events_pkey ATTACH PARTITION public.space_events_2027_07_pkey;
ALTER INDEX public.space_events_space_idx ATTACH PARTITION public.space_events_2027_08_lot_id_space_id_received_at_idx;
ALTER INDEX public.space_events_pkey ATTACH PARTITION public.space_events_2027_08_pkey;
ALTER INDEX public.space_events_space_idx ATTACH PARTITION public.space_events_2027_09_lot_id_space_id_received_at_idx;
ALTER INDEX public.space_events_pkey ATTACH PARTITION public.space_events_2027_09_pkey;
ALTER INDEX public.space_events_space_idx ATTACH PARTITION public.space_events_2027_10_lot_id_space_id_received_at_idx;
ALTER INDEX public.space_events_pkey ATTACH PARTITION public.space_events_2027_10_pkey;
ALTER INDEX public.space_events_space_idx ATTACH PARTITION public.space_events_2027_11_lot_id_space_id_received_at_idx;
ALTER INDEX public.space_events_pkey ATTACH PARTITION public.space_events_2027_11_pkey;
ALTER INDEX public.space_events_space_idx ATTACH PARTITION public.space_events_2027_12_lot_id_space_id_received_at_idx;
ALTER INDEX public.space_events_pkey ATTACH PARTITION public.space_events_2027_12_pkey;
CREATE TRIGGER audit_log_append_only BEFORE DELETE OR UPDATE ON public.audit_log FOR EACH ROW EXECUTE FUNCTION public.append_only_refuse();
CREATE TRIGGER bill_events_append_only BEFORE DELETE OR UPDATE ON public.bill_events FOR EACH ROW EXECUTE FUNCTION public.append_only_refuse();
CREATE TRIGGER bill_events_no_truncate BEFORE TRUNCATE ON public.bill_events FOR EACH STATEMENT EXECUTE FUNCTION public.append_only_refuse();
CREATE TRIGGER bills_notify_owed AFTER INSERT OR UPDATE ON public.bills FOR EACH ROW EXECUTE FUNCTION public.bills_notify_owed();
CREATE TRIGGER bills_rollups_insert AFTER INSERT ON public.bills REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION public.rollups_mark_bills();
CREATE TRIGGER bills_rollups_update AFTER UPDATE ON public.bills REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION public.rollups_mark_bills();
CREATE TRIGGER calendars_append_only BEFORE DELETE OR UPDATE ON public.calendars FOR EACH ROW EXECUTE FUNCTION public.append_only_refuse();
CREATE TRIGGER case_events_append_only BEFORE DELETE OR UPDATE ON public.case_events FOR EACH ROW EXECUTE FUNCTION public.append_only_refuse();
CREATE TRIGGER case_rule_sets_append_only BEFORE DELETE OR UPDATE ON public.case_rule_sets FOR EACH ROW EXECUTE FUNCTION public.append_only_refuse();
CREATE TRIGGER disputes_rollups_insert AFTER INSERT ON public.disputes REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION public.rollups_mark_disputes();
CREATE TRIGGER ledger_accounts_append_only BEFORE DELETE OR UPDATE ON public.ledger_accounts FOR EACH ROW EXECUTE FUNCTION public.append_only_refuse();
CREATE TRIGGER ledger_accounts_no_truncate BEFORE TRUNCATE ON public.ledger_accounts FOR EACH STATEMENT EXECUTE FUNCTION public.append_only_refuse();
CREATE TRIGGER ledger_postings_append_only BEFORE DELETE OR UPDATE ON public.ledger_postings FOR EACH ROW EXECUTE FUNCTION public.append_only_refuse();
CREATE CONSTRAINT TRIGGER ledger_postings_balanced AFTER INSERT ON public.ledger_postings DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.ledger_check_balanced();
CREATE TRIGGER ledger_postings_no_truncate BEFORE TRUNCATE ON public.ledger_postings FOR EACH STATEMENT EXECUTE FUNCTION public.append_only_refuse();
CREATE TRIGGER ledger_transactions_append_only BEFORE DELETE OR UPDATE ON public.ledger_transactions FOR EACH ROW EXECUTE FUNCTION public.append_only_refuse();
CREATE CONSTRAINT TRIGGER ledger_transactions_balanced AFTER INSERT ON public.ledger_transactions DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.ledger_check_balanced();
CREATE TRIGGER ledger_transactions_no_truncate BEFORE TRUNCATE ON public.ledger_transactions FOR EACH STATEMENT EXECUTE FUNCTION public.append_only_refuse();
CREATE CONSTRAINT TRIGGER payment_attempts_shares AFTER INSERT ON public.payment_attempts DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.payment_attempt_check_shares();
CREATE TRIGGER payment_bills_append_only BEFORE DELETE OR UPDATE ON public.payment_bills FOR EACH ROW EXECUTE FUNCTION public.append_only_refuse();
CREATE CONSTRAINT TRIGGER payment_bills_shares AFTER INSERT ON public.payment_bills DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.payment_attempt_check_shares();
CREATE TRIGGER plate_violations_append_only BEFORE DELETE OR UPDATE ON public.plate_violations FOR EACH ROW EXECUTE FUNCTION public.append_only_refuse();
CREATE TRIGGER retention_runs_append_only BEFORE DELETE OR UPDATE ON public.retention_runs FOR EACH ROW EXECUTE FUNCTION public.append_only_refuse();
CREATE TRIGGER sessions_open_delete AFTER DELETE ON public.sessions FOR EACH ROW WHEN ((old.status = 'open'::text)) EXECUTE FUNCTION public.sessions_track_open();
CREATE TRIGGER sessions_open_insert AFTER INSERT ON public.sessions FOR EACH ROW WHEN ((new.status = 'open'::text)) EXECUTE FUNCTION public.sessions_track_open();
CREATE TRIGGER sessions_open_update AFTER UPDATE ON public.sessions FOR EACH ROW WHEN ((((old.status = 'open'::text) OR (new.status = 'open'::text)) AND ((((old.status IS DISTINCT FROM new.status) OR (old.lot_id IS DISTINCT FROM new.lot_id)) OR (old.plate IS DISTINCT FROM new.plate)) OR (old.account_id IS DISTINCT FROM new.account_id)))) EXECUTE FUNCTION public.sessions_track_open();
CREATE TRIGGER sessions_rollups_insert AFTER INSERT ON public.sessions REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION public.rollups_mark_sessions();
CREATE TRIGGER sessions_rollups_update AFTER UPDATE ON public.sessions REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION public.rollups_mark_sessions();
CREATE TRIGGER vehicles_per_account_limit BEFORE INSERT OR UPDATE ON public.vehicles FOR EACH ROW EXECUTE FUNCTION public.vehicles_check_per_account();
ALTER TABLE ONLY public.auth_sessions
    ADD CONSTRAINT auth_sessions_account_id_fkey FOREIGN KEY (account_id) REFERENCES public.accounts(id);
ALTER TABLE ONLY public.bill_events
    ADD CONSTRAINT bill_events_bill_id_fkey FOREIGN KEY (bill_id) REFERENCES public.bills(id);
ALTER TABLE ONLY public.bill_events
    ADD CONSTRAINT bill_events_ledger_transaction_id_fkey FOREIGN KEY (ledger_transaction_id) REFERENCES public.ledger_transactions(id);
ALTER TABLE ONLY public.bills
    ADD CONSTRAINT bills_lot_id_fkey FOREIGN KEY (lot_id) REFERENCES public.lots(id);
ALTER TABLE ONLY public.bills
    ADD CONSTRAINT bills_tariff_id_tariff_version_fkey FOREIGN KEY (tariff_id, tariff_version) REFERENCES public.tariff_versions(tariff_id, version);
ALTER TABLE ONLY public.camera_pushes
    ADD CONSTRAINT camera_pushes_device_id_fkey FOREIGN KEY (device_id) REFERENCES public.devices(device_id);
ALTER TABLE ONLY public.camera_seqs
    ADD CONSTRAINT camera_seqs_device_id_fkey FOREIGN KEY (device_id) REFERENCES public.devices(device_id);
ALTER TABLE ONLY public.case_events
    ADD CONSTRAINT case_events_case_id_fkey FOREIGN KEY (case_id) REFERENCES public.cases(id);
ALTER TABLE ONLY public.case_notifications
    ADD CONSTRAINT case_notifications_case_id_fkey FOREIGN KEY (case_id) REFERENCES public.cases(id);
ALTER TABLE ONLY public.case_photos
    ADD CONSTRAINT case_photos_case_id_fkey FOREIGN KEY (case_id) REFERENCES public.cases(id);
ALTER TABLE ONLY public.case_reports
    ADD CONSTRAINT case_reports_case_id_fkey FOREIGN KEY (case_id) REFERENCES public.cases(id);
ALTER TABLE ONLY public.case_tasks
    ADD CONSTRAINT case_tasks_case_id_fkey FOREIGN KEY (case_id) REFERENCES public.cases(id);
ALTER TABLE ONLY public.contactless_deductions
    ADD CONSTRAINT contactless_deductions_attempt_id_fkey FOREIGN KEY (attempt_id) REFERENCES public.payment_attempts(id);
ALTER TABLE ONLY public.contactless_deductions
    ADD CONSTRAINT contactless_deductions_bill_id_fkey FOREIGN KEY (bill_id) REFERENCES public.bills(id);
ALTER TABLE ONLY public.contactless_deductions
    ADD CONSTRAINT contactless_deductions_mandate_id_fkey FOREIGN KEY (mandate_id) REFERENCES public.contactless_mandates(id);
ALTER TABLE ONLY public.devices
    ADD CONSTRAINT devices_lot_id_fkey FOREIGN KEY (lot_id) REFERENCES public.lots(id);
ALTER TABLE ONLY public.devices
    ADD CONSTRAINT devices_lot_id_lane_id_fkey FOREIGN KEY (lot_id, lane_id) REFERENCES public.lanes(lot_id, lane_id);
ALTER TABLE ONLY public.devices
    ADD CONSTRAINT devices_lot_id_space_id_fkey FOREIGN KEY (lot_id, space_id) REFERENCES public.spaces(lot_id, space_id);
ALTER TABLE ONLY public.discrepancies
    ADD CONSTRAINT discrepancies_last_run_id_fkey FOREIGN KEY (last_run_id) REFERENCES public.reconciliation_runs(id);
ALTER TABLE ONLY public.disputes
    ADD CONSTRAINT disputes_bill_id_fkey FOREIGN KEY (bill_id) REFERENCES public.bills(id);
ALTER TABLE ONLY public.exempt_plate_kinds
    ADD CONSTRAINT exempt_plate_kinds_company_id_fkey FOREIGN KEY (company_id) REFERENCES public.operator_companies(id);
ALTER TABLE ONLY public.lanes
    ADD CONSTRAINT lanes_lot_id_fkey FOREIGN KEY (lot_id) REFERENCES public.lots(id);
ALTER TABLE ONLY public.ledger_postings
    ADD CONSTRAINT ledger_postings_account_code_fkey FOREIGN KEY (account_code) REFERENCES public.ledger_accounts(code);
ALTER TABLE ONLY public.ledger_postings
    ADD CONSTRAINT ledger_postings_transaction_id_fkey FOREIGN KEY (transaction_id) REFERENCES public.ledger_transactions(id);
ALTER TABLE ONLY public.ledger_transactions
    ADD CONSTRAINT ledger_transactions_reverses_fkey FOREIGN KEY (reverses) REFERENCES public.ledger_transactions(id);
ALTER TABLE ONLY public.lot_camera_sources
    ADD CONSTRAINT lot_camera_sources_lot_id_fkey FOREIGN KEY (lot_id) REFERENCES public.lots(id);
ALTER TABLE ONLY public.lot_group_members
    ADD CONSTRAINT lot_group_members_group_id_fkey FOREIGN KEY (group_id) REFERENCES public.lot_groups(id);
ALTER TABLE ONLY public.lot_group_members
    ADD CONSTRAINT lot_group_members_lot_id_fkey FOREIGN KEY (lot_id) REFERENCES public.lots(id);
ALTER TABLE ONLY public.lot_tariffs
    ADD CONSTRAINT lot_tariffs_lot_id_fkey FOREIGN KEY (lot_id) REFERENCES public.lots(id);
ALTER TABLE ONLY public.lot_tariffs
    ADD CONSTRAINT lot_tariffs_tariff_id_fkey FOREIGN KEY (tariff_id) REFERENCES public.tariffs(id);
ALTER TABLE ONLY public.lots
    ADD CONSTRAINT lots_company_id_fkey FOREIGN KEY (company_id) REFERENCES public.operator_companies(id);
ALTER TABLE ONLY public.lots
    ADD CONSTRAINT lots_district_code_fkey FOREIGN KEY (district_code) REFERENCES public.districts(code);
ALTER TABLE ONLY public.monthly_passes
    ADD CONSTRAINT monthly_passes_group_id_fkey FOREIGN KEY (group_id) REFERENCES public.lot_groups(id);
ALTER TABLE ONLY public.payment_anomalies
    ADD CONSTRAINT payment_anomalies_attempt_id_fkey FOREIGN KEY (attempt_id) REFERENCES public.payment_attempts(id);
ALTER TABLE ONLY public.payment_anomalies
    ADD CONSTRAINT payment_anomalies_bill_id_fkey FOREIGN KEY (bill_id) REFERENCES public.bills(id);
ALTER TABLE ONLY public.payment_bills
    ADD CONSTRAINT payment_bills_attempt_id_fkey FOREIGN KEY (attempt_id) REFERENCES public.payment_attempts(id);
ALTER TABLE ONLY public.payment_bills
    ADD CONSTRAINT payment_bills_bill_id_fkey FOREIGN KEY (bill_id) REFERENCES public.bills(id);
ALTER TABLE ONLY public.plate_blacklist
    ADD CONSTRAINT plate_blacklist_company_id_fkey FOREIGN KEY (company_id) REFERENCES public.operator_companies(id);
ALTER TABLE ONLY public.plate_claims
    ADD CONSTRAINT plate_claims_claimant_account_id_fkey FOREIGN KEY (claimant_account_id) REFERENCES public.accounts(id);
ALTER TABLE ONLY public.plate_claims
    ADD CONSTRAINT plate_claims_holder_account_id_fkey FOREIGN KEY (holder_account_id) REFERENCES public.accounts(id);
ALTER TABLE ONLY public.plate_exemptions
    ADD CONSTRAINT plate_exemptions_company_id_fkey FOREIGN KEY (company_id) REFERENCES public.operator_companies(id);
ALTER TABLE ONLY public.plate_violations
    ADD CONSTRAINT plate_violations_case_id_fkey FOREIGN KEY (case_id) REFERENCES public.cases(id);
ALTER TABLE ONLY public.plate_violations
    ADD CONSTRAINT plate_violations_repeat_of_fkey FOREIGN KEY (repeat_of) REFERENCES public.plate_violations(id);
ALTER TABLE ONLY public.reconciliation_runs
    ADD CONSTRAINT reconciliation_runs_import_id_fkey FOREIGN KEY (import_id) REFERENCES public.statement_imports(id);
ALTER TABLE ONLY public.refresh_tokens
    ADD CONSTRAINT refresh_tokens_session_id_fkey FOREIGN KEY (session_id) REFERENCES public.auth_sessions(id);
ALTER TABLE ONLY public.refund_requests
    ADD CONSTRAINT refund_requests_anomaly_id_fkey FOREIGN KEY (anomaly_id) REFERENCES public.payment_anomalies(id);
ALTER TABLE ONLY public.refund_requests
    ADD CONSTRAINT refund_requests_attempt_id_fkey FOREIGN KEY (attempt_id) REFERENCES public.payment_attempts(id);
ALTER TABLE ONLY public.refund_requests
    ADD CONSTRAINT refund_requests_bill_id_fkey FOREIGN KEY (bill_id) REFERENCES public.bills(id);
ALTER TABLE ONLY public.refund_requests
    ADD CONSTRAINT refund_requests_dispute_fk FOREIGN KEY (dispute_id) REFERENCES public.disputes(id);
ALTER TABLE public.sessions
    ADD CONSTRAINT sessions_account_id_fkey FOREIGN KEY (account_id) REFERENCES public.accounts(id);
ALTER TABLE ONLY public.spaces
    ADD CONSTRAINT spaces_lot_id_fkey FOREIGN KEY (lot_id) REFERENCES public.lots(id);
ALTER TABLE ONLY public.statement_imports
    ADD CONSTRAINT statement_imports_replaced_by_fkey FOREIGN KEY (replaced_by) REFERENCES public.statement_imports(id);
ALTER TABLE ONLY public.statement_lines
    ADD CONSTRAINT statement_lines_import_id_fkey FOREIGN KEY (import_id) REFERENCES public.statement_imports(id);
ALTER TABLE ONLY public.tariff_versions
    ADD CONSTRAINT tariff_versions_tariff_id_fkey FOREIGN KEY (tariff_id) REFERENCES public.tariffs(id);
ALTER TABLE ONLY public.tariffs
    ADD CONSTRAINT tariffs_company_id_fkey FOREIGN KEY (company_id) REFERENCES public.operator_companies(id);
ALTER TABLE ONLY public.vehicles
    ADD CONSTRAINT vehicles_account_id_fkey FOREIGN KEY (account_id) REFERENCES public.accounts(id);
