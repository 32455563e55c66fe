"""The reliability matrix's rows (``../shared/reliability-matrix.md``) and the tests
that cause each fault: what ``make chaos`` runs and tabulates (``chaoskit``), and
what ``docs/reliability.md`` must name (``tests/unit/test_chaos_rows.py`` checks).

A test is named by its path under ``tests/integration/`` and, after ``::``, its
name (a parametrized test's every case) or nothing (every test of the file).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    row: str
    fault: str
    checked: str
    tests: tuple[str, ...]


G = "gateway/"
P = "persister/test_persister_recovery.py::"
PAY = "payments_flow/test_payflow_notifications.py::"

ROWS: tuple[Row, ...] = (
    Row(
        "M1",
        "gateway kill -9 between Redis write and MQTT ack",
        "redelivered, deduplicated, counted once",
        (
            G + "test_gateway_delivery.py::"
            "test_m1_a_gateway_killed_between_redis_and_the_ack_is_redelivered_and_counted_once",
        ),
    ),
    Row(
        "M2",
        "gateway down while devices publish",
        "the persistent session delivers all after restart",
        (
            G + "test_gateway_delivery.py::"
            "test_m2_events_sent_while_the_gateway_is_down_arrive_after_its_restart",
        ),
    ),
    Row(
        "M3",
        "broker kill -9 with acknowledged messages queued",
        "outboxes refill what the broker lost",
        (
            G + "test_gateway_crashes.py::"
            "test_m3_after_a_broker_kill_9_devices_refill_what_it_lost_from_their_outboxes",
        ),
    ),
    Row(
        "M4",
        "broker graceful restart",
        "no loss, duplicates deduplicated",
        (G + "test_gateway_delivery.py::test_m4_a_graceful_broker_restart_loses_nothing",),
    ),
    Row(
        "M5",
        "one of two gateways on a shared subscription dies",
        "the other takes the rest, nothing lost",
        (
            G + "test_gateway_delivery.py::"
            "test_m5_when_one_of_two_shared_gateways_dies_nothing_is_lost",
            G + "test_gateway_delivery.py::"
            "test_m5_a_dead_gateways_session_stops_taking_a_share_of_the_passages",
            G + "test_gateway_delivery.py::"
            "test_m5_two_gateways_and_two_persisters_lose_nothing_when_one_of_each_is_killed",
        ),
    ),
    Row(
        "M6",
        "malformed payloads (fuzz corpus)",
        "acked, dead-lettered verbatim with a reason, no crash",
        (
            G + "test_gateway_bad_input.py::"
            "test_m6_every_malformed_payload_is_acked_dead_lettered_verbatim_and_counted",
        ),
    ),
    Row(
        "M7",
        "foreign topic, wrong password, revoked device",
        "refused by the broker, no effect",
        (
            G + "test_gateway_bad_input.py::"
            "test_m7_the_broker_refuses_foreign_topics_wrong_passwords_and_revoked_devices",
            "devices/test_broker_acl.py",
        ),
    ),
    Row(
        "M8",
        "gateway partitioned from the broker for 2 x keepalive",
        "reconnects, re-subscribes, nothing lost",
        (
            G + "test_gateway_partition.py::"
            "test_m8_a_gateway_partitioned_from_the_broker_for_twice_its_keepalive_loses_nothing",
        ),
    ),
    Row(
        "R1",
        "persister kill -9 after read, before ack",
        "pending entries reclaimed, written once",
        (P + "test_r1_a_persister_killed_before_xack_has_its_entries_reclaimed_and_written_once",),
    ),
    Row(
        "R2",
        "persister hangs (SIGSTOP)",
        "another consumer claims after the idle timeout",
        (P + "test_r2_a_hung_persisters_entries_are_claimed_and_written_once_when_it_wakes",),
    ),
    Row(
        "R3",
        "poison stream entry",
        "dead-lettered after N deliveries, stream flows",
        (P + "test_r3_a_poison_entry_is_dead_lettered_after_n_deliveries_and_the_stream_flows",),
    ),
    Row(
        "R4",
        "Redis kill -9 and restart",
        "no acks while down, nothing acked lost",
        (
            G + "test_gateway_delivery.py::"
            "test_r4_redis_killed_and_restarted_the_gateway_waits_and_loses_nothing",
        ),
    ),
    Row(
        "R5",
        "Redis state lost entirely",
        "rebuild restores occupancy, sessions, dedup",
        (
            "occupancy/test_occupancy_core.py::"
            "test_rebuild_restores_occupancy_sessions_and_dedup_from_postgres",
            "driver/test_scan_flows.py::"
            "test_the_rebuild_restores_an_unplated_cars_session_from_postgres",
        ),
    ),
    Row(
        "R6",
        "Redis stalls 5 s (DEBUG SLEEP)",
        "acks held (backpressure), nothing lost; API 503 + Retry-After",
        (
            G + "test_gateway_redis_stall.py::"
            "test_r6_a_redis_stalled_for_5_s_holds_the_acks_and_loses_nothing",
            "auth_perf/test_revocation_across_workers.py::"
            "test_requests_are_refused_with_503_once_redis_is_gone",
        ),
    ),
    Row(
        "R7",
        "keys of two slots in one script; a master killed under load",
        "the core on a 3-master cluster; failover loses nothing",
        (
            "occupancy/test_occupancy_slots.py",
            "occupancy/test_occupancy_core.py",
            G + "test_gateway_redis_failover.py",
        ),
    ),
    Row(
        "P1",
        "PostgreSQL stopped (immediate) during exits",
        "gates decide, events buffer, applied once after recovery; API 503",
        (
            G + "test_gateway_postgres_down.py::"
            "test_p1_postgres_stopped_while_cars_leave_gates_decide_and_every_event_lands_once",
            "test_api_health.py::test_readyz_is_503_problem_with_retry_after_when_postgres_is_down",
        ),
    ),
    Row(
        "P2",
        "connection killed mid-transaction",
        "rolled back, retried, no partial ledger transaction",
        (
            PAY + "test_a_connection_killed_mid_settlement_rolls_back_and_the_resend_pays_once",
            "ledger/test_ledger.py::"
            "test_a_connection_killed_mid_transaction_leaves_nothing_and_the_retry_posts_once",
        ),
    ),
    Row(
        "P3",
        "the same notification 10 times, concurrently",
        "one paid transition, one ledger transaction",
        (
            PAY
            + "test_the_same_notification_ten_times_at_once_pays_once_and_every_reply_is_success",
        ),
    ),
    Row(
        "P4",
        "bad signature, tampered body, wrong amount, unknown order",
        "refused or an anomaly; never paid",
        (
            PAY + "test_bad_signature_and_tampered_body_are_refused_and_nothing_is_recorded",
            PAY + "test_a_notified_amount_other_than_the_orders_is_an_anomaly_and_never_paid",
            PAY + "test_a_payment_for_an_order_we_never_made_is_an_anomaly_answered_success",
        ),
    ),
    Row(
        "P5",
        "notification older than 5 minutes",
        "refused unless already processed",
        (PAY + "test_a_notification_older_than_five_minutes_is_refused_unless_already_processed",),
    ),
    Row(
        "P6",
        "refund notice before the payment notice",
        "no illegal transition, anomaly recorded",
        (PAY + "test_refund_notice_before_the_payment_notice_is_an_anomaly_and_moves_no_bill",),
    ),
    Row(
        "P7",
        "provider never calls back",
        "stuck payments queried and settled or expired",
        ("payments_flow/test_payflow_sweeper.py",),
    ),
    Row(
        "P8",
        "the same Idempotency-Key retried",
        "same response, one order, 409 in flight, 422 on another body",
        (
            "payments_flow/test_payflow_pay.py::"
            "test_retry_with_the_same_key_replays_the_response_and_makes_one_order",
            "payments_flow/test_payflow_pay.py::test_a_retry_while_the_first_request_is_in_flight_is_409",
            "payments_flow/test_payflow_pay.py::test_same_key_with_another_body_is_422",
        ),
    ),
    Row(
        "P9",
        "ledger tampering",
        "UPDATE/DELETE refused by the database",
        (
            "ledger/test_ledger.py::test_ledger_rows_cannot_be_changed_or_removed_even_by_the_owner",
            "ledger/test_app_role.py",
        ),
    ),
    Row(
        "A1",
        "driver A reads or pays driver B's things",
        "404, audited",
        ("driver/test_a1_isolation.py",),
    ),
    Row(
        "A2",
        "a token of the wrong role",
        "403 on every route (matrix from the router)",
        ("api/test_route_role_matrix.py::test_a_role_a_route_does_not_admit_is_403",),
    ),
    Row(
        "A3",
        "expired, alg=none, wrong audience, tampered JWT",
        "401 on every protected route",
        ("api/test_route_role_matrix.py::test_bad_tokens_are_401_on_every_protected_route",),
    ),
    Row(
        "A4",
        "extra fields in a body",
        "400 problem",
        ("accounts/test_vehicles.py::test_extra_fields_in_a_body_are_refused",),
    ),
    Row(
        "A5",
        "body over the route's limit",
        "413 before parsing",
        ("accounts/test_vehicles.py::test_a_body_over_the_route_limit_is_refused_before_parsing",),
    ),
    Row(
        "A6",
        "bursts over the rate limit, from several workers",
        "429 with headers; the limit holds across workers",
        ("accounts/test_rate_limits.py",),
    ),
    Row(
        "A7",
        "forged QR code, odd plate strings",
        "typed 400, never 500",
        (
            "accounts/test_vehicles.py::test_junk_plates_are_a_typed_400",
            "accounts/test_qr_codes.py",
        ),
    ),
    Row(
        "A8",
        "schemathesis over the OpenAPI document, per role",
        "no server error, responses match the schema",
        ("api/test_schemathesis.py",),
    ),
    Row(
        "A9",
        "PostgreSQL or Redis down",
        "503 with Retry-After, /readyz fails, no stack traces",
        (
            "test_api_health.py",
            "driver/test_dependencies_down.py",
            "driver/test_scan_flows.py::test_a_scan_while_the_core_is_not_loaded_is_a_503",
        ),
    ),
)
