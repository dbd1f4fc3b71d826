-- Who caused each event (the caller's token subject and the role it acted in), from the
-- event's metadata: the audit trail. Empty for events written before callers were identified.
ALTER TABLE timeline ADD COLUMN actor_subject text, ADD COLUMN actor_role text;
