-- Every event a reservation caused, in log order, with the request that caused it: what
-- anyone holding the reservation id may see. Summaries carry no personal data.
CREATE TABLE timeline (
    reservation_id  uuid        NOT NULL,
    position        bigint      NOT NULL,
    event_type      text        NOT NULL,
    stream          text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    correlation_id  uuid,
    causation_id    uuid,
    summary         text        NOT NULL,
    PRIMARY KEY (reservation_id, position)
);
