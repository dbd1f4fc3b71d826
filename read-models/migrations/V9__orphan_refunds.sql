-- Orphaned payments the policy refunds, noted before the refund is made: a reservation that is
-- recorded on one of them after all (a retry arriving at that moment) is cancelled.
CREATE TABLE orphan_refunds (
    payment_id      uuid PRIMARY KEY,
    reservation_id  uuid NOT NULL
);
