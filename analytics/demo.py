"""`lectr demo`: fill the org `demo` with realistic generated traffic for the dashboard.

The traffic exercises every figure and rule: several features on all five providers (Azure via
a deployment name and `provider_header` 'azure'), every task type plus missing and unknown ones
(so both confident and heuristic recommendations and the reasoning protection show), streaming
with time to first token, rate limits, server errors and timeouts, a weekly and daily rhythm,
one runaway day for a feature (a cost anomaly), one provider incident (an error-rate anomaly),
untagged traffic, requests whose provider was not detected, and models nobody can price (cost
null, never 0). Costs come from genai-prices, one lookup per model. Rows go in with COPY, and
the org's rollups are recomputed from them in the same transaction (`lectr_rollup_rebuild`).
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from dataclasses import dataclass
from typing import Any, TextIO

import psycopg

from proxy.accounting.pricing import unit_prices
from proxy.store.db import ensure_partitions
from proxy.store.db.rollups import rebuild_org
from proxy.store.orgs import ensure_org, rotate_key

ORG = "demo"


@dataclass(frozen=True, slots=True)
class Profile:
    """One kind of traffic: who sends it, to which model, and what its requests look like."""

    feature: str | None
    task: str | None
    provider: str
    model: str
    weight: float  # share of the day's requests
    prompt: int  # median prompt tokens
    response: int  # median response tokens
    stream: float = 0.0  # share of streamed requests
    messages: tuple[int, int] = (1, 2)
    cached: float = 0.0  # share of the prompt served from the provider's cache
    reasoning: float = 0.0  # share of output tokens spent reasoning
    response_model: str | None = None
    provider_header: str | None = None
    provider_unknown: bool = False
    endpoint: str = "chat/completions"
    ms_per_token: float = 12.0


PROFILES: tuple[Profile, ...] = (
    Profile("support-bot", "generation", "openai", "gpt-4o", 0.16, 1800, 320, stream=0.9, messages=(3, 16),
            cached=0.4, response_model="gpt-4o-2024-08-06"),
    Profile("ticket-classifier", "classification", "openai", "gpt-4o", 0.14, 650, 6,
            response_model="gpt-4o-2024-08-06"),
    Profile("ticket-classifier", "classification", "azure", "prod-gpt4o", 0.06, 650, 6,
            response_model="gpt-4o-2024-08-06", provider_header="azure"),
    Profile("doc-summary", "summarisation", "anthropic", "claude-3-5-sonnet-20241022", 0.08, 7000, 380,
            cached=0.2, ms_per_token=14),
    Profile("invoice-extract", "extraction", "anthropic", "claude-3-opus-20240229", 0.05, 2500, 450,
            ms_per_token=25),
    Profile("planner", "reasoning", "openai", "o3", 0.04, 3000, 1800, reasoning=0.7, ms_per_token=9),
    Profile("autocomplete", None, "groq", "llama-3.1-70b-versatile", 0.16, 350, 24, stream=0.6, ms_per_token=3),
    Profile("search-answers", "qa", "gemini", "gemini-2.5-pro", 0.07, 4200, 260, stream=0.5),
    Profile("email-drafts", "generation", "gemini", "gemini-1.5-pro", 0.04, 900, 420, stream=0.7),
    Profile("search-index", None, "openai", "text-embedding-3-large", 0.05, 600, 0,
            endpoint="embeddings", ms_per_token=0.0),
    Profile(None, None, "openai", "gpt-4o-mini", 0.07, 800, 150, stream=0.3),
    Profile(None, None, "openai", "acme-internal-llm", 0.02, 700, 200, provider_unknown=True),
    Profile("legacy-tool", None, "openai", "bedrock-claude", 0.02, 500, 120, provider_header="bedrock",
            provider_unknown=True),
)

# Requests per hour of day (UTC), relative: quiet nights, busy office hours.
HOURLY = (2, 1, 1, 1, 1, 2, 4, 7, 10, 12, 12, 11, 10, 11, 12, 12, 11, 9, 7, 6, 5, 4, 3, 2)
WEEKEND = 0.45  # Saturday and Sunday traffic relative to a weekday

COLUMNS = (
    "id", "org_id", "created_at", "request_id", "provider", "provider_header", "provider_unknown", "model",
    "response_model", "feature", "task", "endpoint", "stream", "status_code", "error_type", "error_message",
    "latency_ms", "ttft_ms", "upstream_ms", "input_tokens", "output_tokens", "cached_input_tokens",
    "cache_write_tokens", "reasoning_tokens", "usage_estimated", "cost_usd", "price_source",
    "request_bytes", "response_bytes", "message_count", "end_user",
)

# Features that act for a customer name one (X-Lectr-User or the body's `user`): 40 customers, a
# few of them heavy (a Pareto draw), as in most products.
CUSTOMER_FEATURES = frozenset({"support-bot", "search-answers", "email-drafts", "autocomplete"})
CUSTOMERS = 40

ERRORS = (  # status, error_type, message, probability
    (429, "rate_limited", "Rate limit reached for requests", 0.015),
    (500, "upstream_error", "The server had an error while processing your request", 0.006),
    (504, "timeout", "The provider did not answer in time", 0.003),
)


def _price(profile: Profile, tokens_in: int, cached: int, tokens_out: int) -> float | None:
    """genai-prices cost (cached per model); an Azure deployment is priced as the model it runs."""
    model = profile.response_model if profile.provider == "azure" else profile.model
    prices = unit_prices(model or profile.model, profile.provider)
    return None if prices is None else round(prices.cost(tokens_in, cached, tokens_out), 10)


def _event(rng: random.Random, org_id: int, when: dt.datetime, p: Profile, incident: bool) -> tuple[Any, ...]:
    """One row in `COLUMNS` order."""
    stream = rng.random() < p.stream
    status, error_type, message = 200, None, None
    roll, edge = rng.random(), 0.0
    for code, kind, text, chance in ERRORS:
        edge += chance * (25 if incident and code in (500, 504) else 1)
        if roll < edge:
            status, error_type, message = code, kind, text
            break
    if status == 200 and stream and rng.random() < 0.003:
        status, error_type, message = 499, "client_closed", None
    tokens_in = max(1, int(p.prompt * rng.lognormvariate(0, 0.45)))
    tokens_out = max(0, int(p.response * rng.lognormvariate(0, 0.5))) if p.response else 0
    cached = int(tokens_in * p.cached * rng.random() * 2) if p.cached else 0
    reasoning = int(tokens_out * p.reasoning) if p.reasoning else None
    overhead = rng.uniform(0.8, 4.5)
    upstream = rng.uniform(180, 450) + tokens_out * p.ms_per_token * rng.uniform(0.7, 1.4)
    ttft = rng.uniform(150, 600) if stream else None
    if status in (429, 500):
        upstream, tokens_in, tokens_out, cached, reasoning, ttft = rng.uniform(50, 400), 0, 0, 0, None, None
    elif status == 504:
        upstream, tokens_in, tokens_out, cached, reasoning, ttft = 300_000.0, 0, 0, 0, None, None
    elif status == 499:
        tokens_out, upstream = tokens_out // 3, upstream / 3
    billed = status < 400 or status == 499
    cost = _price(p, tokens_in, cached, tokens_out) if billed else None
    return (
        uuid.uuid4(), org_id, when, f"req_{uuid.uuid4().hex[:24]}", p.provider, p.provider_header,
        p.provider_unknown, p.model, (p.response_model or p.model) if billed else None, p.feature, p.task,
        p.endpoint, stream, status, error_type, message, upstream + overhead, ttft, upstream,
        tokens_in if billed else None, tokens_out if billed else None, cached if billed else None,
        0 if billed else None,
        reasoning, stream and rng.random() < 0.02, cost, "genai-prices" if cost is not None else None,
        tokens_in * 4 + 200, tokens_out * 4 + 300 if billed else 120, rng.randint(*p.messages),
        _customer(rng) if p.feature in CUSTOMER_FEATURES else None,
    )


def _customer(rng: random.Random) -> str:
    return f"customer-{min(CUSTOMERS, int(rng.paretovariate(1.2))):03d}"


def _day_events(
    rng: random.Random, org_id: int, day: dt.datetime, first: dt.datetime, now: dt.datetime, per_day: int,
    spike: bool, incident: bool,
) -> list[tuple[Any, ...]]:
    weights = [p.weight for p in PROFILES]
    volume = per_day * (WEEKEND if day.weekday() >= 5 else 1.0) * rng.uniform(0.9, 1.1)
    rows = []
    for hour, share in enumerate(HOURLY):
        start = day + dt.timedelta(hours=hour)
        if start >= now:
            break
        if start + dt.timedelta(hours=1) <= first:
            continue
        for _ in range(int(volume * share / sum(HOURLY))):
            when = start + dt.timedelta(seconds=rng.uniform(0, 3600))
            if not first <= when < now:
                continue
            p = rng.choices(PROFILES, weights)[0]
            rows.append(_event(rng, org_id, when, p, incident and p.provider == "groq" and 14 <= hour < 16))
        if spike and 9 <= hour < 17:  # a runaway batch job re-summarising every document
            runaway = next(p for p in PROFILES if p.feature == "doc-summary")
            for _ in range(int(volume * 0.08)):
                when = start + dt.timedelta(seconds=rng.uniform(0, 3600))
                if first <= when < now:
                    rows.append(_event(rng, org_id, when, runaway, False))
    return rows


def generate(conn: psycopg.Connection[Any], days: int = 30, progress: TextIO | None = None,
             per_day: int = 3000, seed: int = 20240229) -> str:
    """Replace the `demo` org's events with `days` days of traffic ending now; return a new key.

    `per_day` is a weekday's volume (weekends are quieter). Deterministic for a given `seed`,
    apart from the timestamps, which end at the current time.
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    rng = random.Random(seed)
    org, _ = ensure_org(conn, ORG)
    key = rotate_key(conn, ORG)
    now = dt.datetime.now(dt.UTC)
    first = now - dt.timedelta(days=days)
    midnight = first.replace(hour=0, minute=0, second=0, microsecond=0)
    ensure_partitions(conn, now, months_back=days // 28 + 2)
    spike_day, incident_day = max(1, days * 2 // 3), max(0, days // 3)
    total = 0
    with conn.transaction():
        conn.execute("DELETE FROM events WHERE org_id = %s", (org.id,))
        with conn.cursor() as cur, cur.copy(f"COPY events ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for index in range(days + 1):
                day = midnight + dt.timedelta(days=index)
                rows = _day_events(rng, org.id, day, first, now, per_day, index == spike_day, index == incident_day)
                for row in rows:
                    copy.write_row(row)
                total += len(rows)
                if progress is not None:
                    print(f"demo: {day:%Y-%m-%d} {len(rows):>6} events ({(index + 1) * 100 // (days + 1)}%)",
                          file=progress, flush=True)
        rebuild_org(conn, org.id)  # the rollups of the events just replaced, with them
    if progress is not None:
        print(f"demo: {total} events for org {ORG!r}; sign in to the dashboard with the key below", file=progress)
    return key
