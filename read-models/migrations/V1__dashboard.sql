-- The dashboard: one row per reservation, with every fact a customer or the cleaning company
-- looks at. Personal fields are NULL only when erased (the customer was forgotten).
CREATE TABLE dashboard (
    reservation_id     uuid PRIMARY KEY,
    customer_id        uuid        NOT NULL,
    customer_name      text,
    place              text,
    personal_erased    boolean     NOT NULL DEFAULT false,
    request_date       date        NOT NULL,
    price_cents        bigint      NOT NULL,
    status             text        NOT NULL,
    cleaner            text,
    cancel_reason      text,
    payment_id         uuid        NOT NULL,
    payment_kind       text        NOT NULL DEFAULT 'unknown',
    payment_status     text        NOT NULL DEFAULT 'pending',
    last_notification  text        NOT NULL DEFAULT 'none',
    requested_at       timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    last_position      bigint      NOT NULL
);
CREATE INDEX dashboard_by_status ON dashboard (status, reservation_id);
CREATE INDEX dashboard_by_customer ON dashboard (customer_id, reservation_id);

-- Payments, kept on their own: a payment is decided before its reservation is recorded.
CREATE TABLE payments (
    payment_id      uuid PRIMARY KEY,
    reservation_id  uuid   NOT NULL,
    amount_cents    bigint NOT NULL,
    paymethod_kind  text   NOT NULL DEFAULT 'unknown',
    status          text   NOT NULL,
    decline_reason  text,
    last_position   bigint NOT NULL
);
CREATE INDEX payments_by_reservation ON payments (reservation_id);

-- How far each projection has applied the log; written in the same transaction as its rows.
CREATE TABLE checkpoints (
    projection       text PRIMARY KEY,
    commit_position  bigint NOT NULL
);
