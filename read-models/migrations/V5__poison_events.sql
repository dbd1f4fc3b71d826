-- Events a projection could not apply (malformed payload, unknown version): recorded, never
-- skipped silently. `parked` tells whether the projection went on past it.
CREATE TABLE poison_events (
    projection   text        NOT NULL,
    position     bigint      NOT NULL,
    stream       text        NOT NULL,
    event_type   text        NOT NULL,
    error        text        NOT NULL,
    parked       boolean     NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, position)
);
