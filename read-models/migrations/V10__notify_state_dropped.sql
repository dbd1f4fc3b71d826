-- The notification policy reads whose reservation, payment or payment method an event is about
-- from the event store (the aggregate's first event) instead of remembering it: its replicas
-- share the work as a consumer group, in any order, so no replica's table may be the truth.
DROP TABLE IF EXISTS notify_reservations;
DROP TABLE IF EXISTS notify_payments;
DROP TABLE IF EXISTS notify_paymethods;
