CREATE TABLE public.audit_log (
    id bigint NOT NULL,
    at timestamp with time zone NOT NULL,
    actor text NOT NULL,
    role text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    details jsonb DEFAULT '{}'::jsonb NOT NULL
);
ALTER TABLE public.audit_log ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.audit_log_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
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
    CONSTRAINT devices_device_id_check CHECK ((device_id ~ '^[A-Za-z0-9_-]{1,64}$'::text)),
    CONSTRAINT devices_kind_check CHECK ((kind = ANY (ARRAY['gate'::text, 'sensor'::text, 'sign'::text]))),
    CONSTRAINT devices_placement_check CHECK ((((kind = 'gate'::text) AND (lane_id IS NOT NULL) AND (space_id IS NULL)) OR ((kind = 'sensor'::text) AND (space_id IS NOT NULL) AND (lane_id IS NULL)) OR ((kind = 'sign'::text) AND (space_id IS NULL))))
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
    CONSTRAINT exempt_plate_kinds_reason_check CHECK ((reason <> ''::text))
);
CREATE TABLE public.lanes (
    lot_id text NOT NULL,
    lane_id text NOT NULL,
    direction text NOT NULL,
    CONSTRAINT lanes_direction_check CHECK ((direction = ANY (ARRAY['in'::text, 'out'::text]))),
    CONSTRAINT lanes_lane_id_check CHECK ((lane_id ~ '^[A-Za-z0-9_-]{1,64}$'::text))
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
    CONSTRAINT lots_arrears_hold_after_check CHECK ((arrears_hold_after >= '00:00:00'::interval)),
    CONSTRAINT lots_capacity_check CHECK ((capacity > 0)),
    CONSTRAINT lots_exit_window_minutes_check CHECK ((exit_window_minutes >= 0)),
    CONSTRAINT lots_full_policy_check CHECK ((full_policy = ANY (ARRAY['hold'::text, 'open'::text]))),
    CONSTRAINT lots_id_check CHECK ((id ~ '^[A-Za-z0-9_-]{1,64}$'::text)),
    CONSTRAINT lots_kind_check CHECK ((kind = ANY (ARRAY['gated'::text, 'on_street'::text]))),
    CONSTRAINT lots_latitude_check CHECK (((latitude >= ('-90'::integer)::numeric) AND (latitude <= (90)::numeric))),
    CONSTRAINT lots_longitude_check CHECK (((longitude >= ('-180'::integer)::numeric) AND (longitude <= (180)::numeric)))
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
CREATE TABLE public.plate_blacklist (
    plate text NOT NULL,
    reason text NOT NULL,
    created_by text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT plate_blacklist_reason_check CHECK ((reason <> ''::text))
);
CREATE TABLE public.plate_exemptions (
    plate text NOT NULL,
    reason text NOT NULL,
    created_by text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT plate_exemptions_reason_check CHECK ((reason <> ''::text))
);
CREATE TABLE public.schema_migrations (
    version integer NOT NULL,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);
CREATE TABLE public.spaces (
    lot_id text NOT NULL,
    space_id text NOT NULL,
    kind text DEFAULT 'standard'::text NOT NULL,
    CONSTRAINT spaces_kind_check CHECK ((kind = ANY (ARRAY['standard'::text, 'accessible'::text, 'charging'::text, 'large'::text]))),
    CONSTRAINT spaces_space_id_check CHECK ((space_id ~ '^[A-Za-z0-9_-]{1,64}$'::text))
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
ALTER TABLE ONLY public.audit_log
    ADD CONSTRAINT audit_log_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.devices
    ADD CONSTRAINT devices_pkey PRIMARY KEY (device_id);
ALTER TABLE ONLY public.districts
    ADD CONSTRAINT districts_name_key UNIQUE (name);
ALTER TABLE ONLY public.districts
    ADD CONSTRAINT districts_pkey PRIMARY KEY (code);
ALTER TABLE ONLY public.exempt_plate_kinds
    ADD CONSTRAINT exempt_plate_kinds_pkey PRIMARY KEY (kind);
ALTER TABLE ONLY public.lanes
    ADD CONSTRAINT lanes_pkey PRIMARY KEY (lot_id, lane_id);
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
ALTER TABLE ONLY public.plate_blacklist
    ADD CONSTRAINT plate_blacklist_pkey PRIMARY KEY (plate);
ALTER TABLE ONLY public.plate_exemptions
    ADD CONSTRAINT plate_exemptions_pkey PRIMARY KEY (plate);
ALTER TABLE ONLY public.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);
ALTER TABLE ONLY public.spaces
    ADD CONSTRAINT spaces_pkey PRIMARY KEY (lot_id, space_id);
ALTER TABLE ONLY public.tariff_versions
    ADD CONSTRAINT tariff_versions_effective_unique UNIQUE (tariff_id, effective_from);
ALTER TABLE ONLY public.tariff_versions
    ADD CONSTRAINT tariff_versions_pkey PRIMARY KEY (tariff_id, version);
ALTER TABLE ONLY public.tariffs
    ADD CONSTRAINT tariffs_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.vehicle_class_overrides
    ADD CONSTRAINT vehicle_class_overrides_pkey PRIMARY KEY (plate);
CREATE INDEX audit_log_target_idx ON public.audit_log USING btree (target, at);
CREATE INDEX devices_lot_idx ON public.devices USING btree (lot_id);
CREATE UNIQUE INDEX devices_one_gate_per_lane ON public.devices USING btree (lot_id, lane_id) WHERE ((kind = 'gate'::text) AND (revoked_at IS NULL));
CREATE UNIQUE INDEX devices_one_sensor_per_space ON public.devices USING btree (lot_id, space_id) WHERE ((kind = 'sensor'::text) AND (revoked_at IS NULL));
CREATE INDEX lot_group_members_lot_idx ON public.lot_group_members USING btree (lot_id);
CREATE INDEX lot_tariffs_tariff_idx ON public.lot_tariffs USING btree (tariff_id);
CREATE INDEX lots_district_idx ON public.lots USING btree (district_code);
CREATE INDEX monthly_passes_plate_idx ON public.monthly_passes USING btree (plate) WHERE (revoked_at IS NULL);
ALTER TABLE ONLY public.devices
    ADD CONSTRAINT devices_lot_id_fkey FOREIGN KEY (lot_id) REFERENCES public.lots(id);
ALTER TABLE ONLY public.devices
    ADD CONSTRAINT devices_lot_id_lane_id_fkey FOREIGN KEY (lot_id, lane_id) REFERENCES public.lanes(lot_id, lane_id);
ALTER TABLE ONLY public.devices
    ADD CONSTRAINT devices_lot_id_space_id_fkey FOREIGN KEY (lot_id, space_id) REFERENCES public.spaces(lot_id, space_id);
ALTER TABLE ONLY public.lanes
    ADD CONSTRAINT lanes_lot_id_fkey FOREIGN KEY (lot_id) REFERENCES public.lots(id);
ALTER TABLE ONLY public.lot_group_members
    ADD CONSTRAINT lot_group_members_group_id_fkey FOREIGN KEY (group_id) REFERENCES public.lot_groups(id);
ALTER TABLE ONLY public.lot_group_members
    ADD CONSTRAINT lot_group_members_lot_id_fkey FOREIGN KEY (lot_id) REFERENCES public.lots(id);
ALTER TABLE ONLY public.lot_tariffs
    ADD CONSTRAINT lot_tariffs_lot_id_fkey FOREIGN KEY (lot_id) REFERENCES public.lots(id);
ALTER TABLE ONLY public.lot_tariffs
    ADD CONSTRAINT lot_tariffs_tariff_id_fkey FOREIGN KEY (tariff_id) REFERENCES public.tariffs(id);
ALTER TABLE ONLY public.lots
    ADD CONSTRAINT lots_district_code_fkey FOREIGN KEY (district_code) REFERENCES public.districts(code);
ALTER TABLE ONLY public.monthly_passes
    ADD CONSTRAINT monthly_passes_group_id_fkey FOREIGN KEY (group_id) REFERENCES public.lot_groups(id);
ALTER TABLE ONLY public.spaces
    ADD CONSTRAINT spaces_lot_id_fkey FOREIGN KEY (lot_id) REFERENCES public.lots(id);
ALTER TABLE ONLY public.tariff_versions
    ADD CONSTRAINT tariff_versions_tariff_id_fkey FOREIGN KEY (tariff_id) REFERENCES public.tariffs(id);
