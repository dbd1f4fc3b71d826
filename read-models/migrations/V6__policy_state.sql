-- What the notification policy must remember to address a message: events name a reservation,
-- payment or payment method, the message goes to its customer.
CREATE TABLE notify_reservations (
    reservation_id  uuid PRIMARY KEY,
    customer_id     uuid NOT NULL
);
CREATE TABLE notify_payments (
    payment_id      uuid PRIMARY KEY,
    reservation_id  uuid   NOT NULL,
    amount_cents    bigint NOT NULL,
    -- The approval, told once the reservation (and so its customer) is known.
    approved_event  uuid,
    correlation_id  uuid
);
CREATE TABLE notify_paymethods (
    paymethod_id  uuid PRIMARY KEY,
    customer_id   uuid NOT NULL
);

-- Approved payments whose reservation has not been seen yet; one left here too long is an
-- orphan (the command side stopped between paying and recording) and is refunded.
CREATE TABLE orphan_candidates (
    payment_id      uuid        PRIMARY KEY,
    reservation_id  uuid        NOT NULL,
    approved_at     timestamptz NOT NULL,
    approved_event  uuid        NOT NULL,
    correlation_id  uuid
);
CREATE INDEX orphan_candidates_by_age ON orphan_candidates (approved_at);
