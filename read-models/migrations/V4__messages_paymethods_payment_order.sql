-- Messages sent to customers. Recipient and text are NULL only when erased.
CREATE TABLE messages (
    message_id       uuid        PRIMARY KEY,
    customer_id      uuid        NOT NULL,
    reservation_id   uuid,
    recipient        text,
    text             text,
    cause            text        NOT NULL,
    personal_erased  boolean     NOT NULL DEFAULT false,
    sent_at          timestamptz NOT NULL,
    position         bigint      NOT NULL
);
CREATE INDEX messages_in_order ON messages (position DESC);
CREATE INDEX messages_by_customer_in_order ON messages (customer_id, position DESC);
CREATE INDEX messages_by_reservation_in_order ON messages (reservation_id, position DESC);

-- Payment methods: masked numbers only. The holder's name is NULL only when erased.
CREATE TABLE paymethods (
    paymethod_id         uuid        PRIMARY KEY,
    customer_id          uuid        NOT NULL,
    customer_name        text,
    personal_erased      boolean     NOT NULL DEFAULT false,
    kind                 text        NOT NULL,
    masked_number        text        NOT NULL,
    registered_at        timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    registered_position  bigint      NOT NULL,
    last_position        bigint      NOT NULL
);
CREATE INDEX paymethods_in_order ON paymethods (registered_position DESC);
CREATE INDEX paymethods_by_customer_in_order ON paymethods (customer_id, registered_position DESC);

-- Payments in the order they entered the log, for stable keyset paging, and when they last
-- changed.
ALTER TABLE payments ADD COLUMN first_position bigint NOT NULL DEFAULT 0;
ALTER TABLE payments ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
UPDATE payments SET first_position = last_position;
CREATE INDEX payments_in_order ON payments (first_position DESC);
CREATE INDEX payments_by_reservation_in_order ON payments (reservation_id, first_position DESC);
CREATE INDEX payments_by_status_in_order ON payments (status, first_position DESC);

-- Whose payment it is, once its reservation is recorded (a declined payment has none).
ALTER TABLE payments ADD COLUMN customer_id uuid;
CREATE INDEX payments_by_customer_in_order ON payments (customer_id, first_position DESC);
