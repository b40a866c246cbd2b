-- Routing rules (SPEC §7) and fallbacks.
CREATE TABLE routing_rules (
    id              bigserial PRIMARY KEY,
    org_id          bigint NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    priority        integer NOT NULL DEFAULT 100,   -- lower runs first
    enabled         boolean NOT NULL DEFAULT true,
    match_feature   text,                           -- NULL: any
    match_task      text,
    match_model     text,
    match_provider  text,
    to_model        text NOT NULL,
    to_provider     text,                           -- NULL: detected from to_model
    fallbacks       text[] NOT NULL DEFAULT '{}',   -- "model" or "provider:model", tried in order
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX routing_rules_org ON routing_rules (org_id, priority, id);

-- Fallbacks for requests no rule matches.
ALTER TABLE orgs ADD COLUMN fallbacks text[] NOT NULL DEFAULT '{}';

-- What happened on the way: "model@provider:status" per attempt, e.g. "gpt-4o@openai:429 gpt-4o-mini@openai:200".
ALTER TABLE events ADD COLUMN attempt_log text;
