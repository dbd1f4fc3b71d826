-- Each read model keeps its own checkpoint from now on (they were applied together under the
-- dashboard's): the messages and the timeline start where the dashboard stands.
INSERT INTO checkpoints (projection, commit_position)
SELECT model, commit_position
FROM checkpoints, unnest(ARRAY['messages', 'timeline']) AS model
WHERE projection = 'dashboard'
ON CONFLICT (projection) DO NOTHING;
