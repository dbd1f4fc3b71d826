-- Order the dashboard by where each reservation entered the log: event timestamps share a
-- second (clients read them to the second), log positions never tie.
ALTER TABLE dashboard ADD COLUMN requested_position bigint NOT NULL DEFAULT 0;
CREATE INDEX dashboard_by_log_order ON dashboard (requested_position DESC);
CREATE INDEX dashboard_by_status_in_order ON dashboard (status, requested_position DESC);
CREATE INDEX dashboard_by_customer_in_order ON dashboard (customer_id, requested_position DESC);
