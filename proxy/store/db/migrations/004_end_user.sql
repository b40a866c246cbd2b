-- The end user of a request (SPEC §3): `X-Lectr-User`, or else the body's `user` (OpenAI) or
-- `metadata.user_id` (Anthropic). At most 200 characters; null when the request names none.
ALTER TABLE events ADD COLUMN end_user text;
CREATE INDEX events_org_end_user_time ON events (org_id, end_user, created_at DESC) WHERE end_user IS NOT NULL;
