-- The live feed (`GET /dashboard/changes`) reads the rows changed after a log position.
CREATE INDEX dashboard_by_last_position ON dashboard (last_position);

-- The business at a glance (`GET /summary`), kept by the projector beside the dashboard in the
-- same transactions: reservations by their current status...
CREATE TABLE reservations_by_status (
    status        text   PRIMARY KEY,
    reservations  bigint NOT NULL
);
-- ...and payments approved and refunded per day (UTC) of the event.
CREATE TABLE payments_by_day (
    day             date   PRIMARY KEY,
    approved        bigint NOT NULL DEFAULT 0,
    approved_cents  bigint NOT NULL DEFAULT 0,
    refunded        bigint NOT NULL DEFAULT 0,
    refunded_cents  bigint NOT NULL DEFAULT 0
);

-- A database that already has reservations starts with their counts; the days before this
-- migration are filled by a rebuild (`projector rebuild`), which replays the whole log.
INSERT INTO reservations_by_status (status, reservations)
SELECT status, count(*) FROM dashboard GROUP BY status;
