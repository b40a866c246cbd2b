-- Orgs, their keys (hashes only) and the events table, partitioned by month.
CREATE TABLE orgs (
    id                 bigserial PRIMARY KEY,
    name               text NOT NULL UNIQUE,
    azure_endpoint     text,
    azure_api_version  text NOT NULL DEFAULT '2024-02-01',
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE org_keys (
    id          bigserial PRIMARY KEY,
    org_id      bigint NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    key_hash    text NOT NULL UNIQUE,          -- sha256 hex of the key; the key itself is never stored
    key_prefix  text NOT NULL,                 -- first characters, to tell keys apart in the UI
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX org_keys_active ON org_keys (org_id) WHERE revoked_at IS NULL;

CREATE TABLE events (
    id                   uuid NOT NULL,
    org_id               bigint NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    created_at           timestamptz NOT NULL,
    request_id           text,
    provider             text NOT NULL,
    provider_header      text,
    provider_unknown     boolean NOT NULL DEFAULT false,
    model                text,
    response_model       text,
    routed_model         text,
    route_rule_id        bigint,
    attempts             smallint NOT NULL DEFAULT 1,
    feature              text,
    task                 text,
    endpoint             text NOT NULL,
    stream               boolean NOT NULL DEFAULT false,
    status_code          integer NOT NULL,
    error_type           text,
    error_message        text,
    latency_ms           double precision,
    ttft_ms              double precision,
    upstream_ms          double precision,
    input_tokens         integer,
    output_tokens        integer,
    cached_input_tokens  integer,
    cache_write_tokens   integer,
    reasoning_tokens     integer,
    usage_estimated      boolean NOT NULL DEFAULT false,
    cost_usd             numeric(20, 10),
    price_source         text,
    request_bytes        bigint,
    response_bytes       bigint,
    message_count        integer,
    PRIMARY KEY (created_at, id)
) PARTITION BY RANGE (created_at);

-- Rows outside every monthly partition land here rather than fail; see docs/PARTITIONING.md.
CREATE TABLE events_default PARTITION OF events DEFAULT;

-- The dashboard and analytics always filter by org and time.
CREATE INDEX events_org_time ON events (org_id, created_at DESC);
CREATE INDEX events_org_feature_time ON events (org_id, feature, created_at DESC);
