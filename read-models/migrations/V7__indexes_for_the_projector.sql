-- Payment events find their dashboard row by payment id: without this index every one of them
-- scanned the whole table.
CREATE INDEX dashboard_by_payment ON dashboard (payment_id);

-- Superseded by the log-order indexes that the query side uses (V2, V4); each index costs every
-- status change an update.
DROP INDEX dashboard_by_status;
DROP INDEX dashboard_by_customer;
DROP INDEX payments_by_reservation;
