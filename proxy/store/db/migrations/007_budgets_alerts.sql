-- Budgets and alerts (SPEC §9).

-- An org's spending limit for a UTC day or month, on the whole org (feature NULL) or one feature.
CREATE TABLE budgets (
    id          bigserial PRIMARY KEY,
    org_id      bigint NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    feature     text,                                   -- NULL: the whole org
    period      text NOT NULL CHECK (period IN ('day', 'month')),
    limit_usd   numeric(20, 6) NOT NULL CHECK (limit_usd > 0),
    hard        boolean NOT NULL DEFAULT false,         -- refuse requests (429) once reached
    alert_at    integer[] NOT NULL DEFAULT '{80,100}',  -- percentages of the limit
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX budgets_org ON budgets (org_id);

-- Where an org's alerts go.
CREATE TABLE alert_webhooks (
    id          bigserial PRIMARY KEY,
    org_id      bigint NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    url         text NOT NULL,
    format      text NOT NULL CHECK (format IN ('json', 'slack')),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_webhooks_org ON alert_webhooks (org_id);

-- One row per alert raised. `dedup` makes "once per budget, threshold and period" and "once per
-- anomaly episode" a unique constraint rather than a promise of the code.
CREATE TABLE alerts (
    id          bigserial PRIMARY KEY,
    org_id      bigint NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    kind        text NOT NULL,                          -- budget_threshold | anomaly | test
    dedup       text NOT NULL,
    payload     jsonb NOT NULL,                         -- the generic JSON object (README)
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, dedup)
);

-- One alert to one webhook: its state, retried with backoff until delivered or given up.
CREATE TABLE alert_deliveries (
    id              bigserial PRIMARY KEY,
    alert_id        bigint NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
    webhook_id      bigint REFERENCES alert_webhooks(id) ON DELETE SET NULL,
    org_id          bigint NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    UNIQUE (alert_id, webhook_id)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at) WHERE status = 'pending';

-- Every attempt and its outcome: the dashboard's delivery log.
CREATE TABLE alert_attempts (
    id           bigserial PRIMARY KEY,
    delivery_id  bigint NOT NULL REFERENCES alert_deliveries(id) ON DELETE CASCADE,
    org_id       bigint NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    at           timestamptz NOT NULL DEFAULT now(),
    status_code  integer,                               -- NULL: no answer (refused, timeout)
    outcome      text NOT NULL,                         -- delivered | retry | failed
    error        text,
    duration_ms  double precision
);
CREATE INDEX alert_attempts_org ON alert_attempts (org_id, at DESC);

-- Anomaly episodes: an anomaly alerts when its episode starts; seen again within the quiet period
-- after it ended, it continues the same episode instead.
CREATE TABLE anomaly_episodes (
    id            bigserial PRIMARY KEY,
    org_id        bigint NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    subject       text NOT NULL,                        -- kind and what: "feature_cost:chat"
    started_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    ended_at      timestamptz
);
CREATE INDEX anomaly_episodes_org ON anomaly_episodes (org_id, subject, started_at DESC);
