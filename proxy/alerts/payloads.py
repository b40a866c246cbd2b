"""What an alert says: the generic JSON object (README "Alerts") and the Slack message made from it.

Pure functions. An alert is built only from a budget's own fields and figures, or an anomaly's
subject (feature, provider, model) and figures, of the one org it is sent to: no key, no prompt,
no request content and nothing of another org can be in it, because nothing of the kind is ever
passed in.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from proxy.store.budgets import Budget, period_end, period_start

VERSION = 1

_ANOMALY_LABELS = {
    "feature_cost": ("feature", "daily cost", "usd"),
    "provider_error_rate": ("provider", "hourly error rate", "rate"),
    "model_latency_p95": ("model", "daily p95 latency", "ms"),
}


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "usd":
        return f"${value:,.2f}"
    if unit == "rate":
        return f"{100 * value:.1f} %"
    return f"{value:,.0f} ms"


def budget_alert(org: str, budget: Budget, spend: float, threshold: int, now: dt.datetime) -> dict[str, Any]:
    """A budget crossed `threshold` % of its limit in the current period."""
    start, resets = period_start(budget.period, now), period_end(budget.period, now)
    scope = f"feature `{budget.feature}`" if budget.feature is not None else "the whole org"
    percent = 100 * spend / budget.limit_usd
    hard = " Requests it covers are now refused (hard budget)." if budget.hard and percent >= 100 else ""
    return {
        "type": "lectr.alert",
        "version": VERSION,
        "kind": "budget_threshold",
        "org": org,
        "created_at": _iso(now),
        "title": f"Budget {budget.id} at {threshold} %: ${spend:,.2f} of ${budget.limit_usd:,.2f} this {budget.period}",
        "text": f"Org `{org}`, {scope}: ${spend:,.2f} spent of ${budget.limit_usd:,.2f} ({percent:.0f} %) since"
        f" {_iso(start)}; the {budget.period} resets at {_iso(resets)}.{hard}",
        "budget": {
            "id": budget.id,
            "feature": budget.feature,
            "period": budget.period,
            "period_start": _iso(start),
            "resets_at": _iso(resets),
            "limit_usd": budget.limit_usd,
            "spend_usd": round(spend, 6),
            "threshold_percent": threshold,
            "hard": budget.hard,
        },
        "anomaly": None,
    }


def anomaly_alert(org: str, found: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """An anomaly episode started (a row of `analytics.anomalies`)."""
    kind = str(found["kind"])
    subject_column, what, unit = _ANOMALY_LABELS.get(kind, ("feature", kind, "usd"))
    subject = found.get(subject_column) or "untagged"
    value, baseline = found.get("value"), found.get("baseline")
    ratio = found.get("ratio")
    times = f" ({ratio:.1f}× its baseline)" if ratio else ""
    bucket = found.get("bucket")
    return {
        "type": "lectr.alert",
        "version": VERSION,
        "kind": "anomaly",
        "org": org,
        "created_at": _iso(now),
        "title": f"Anomaly: {subject_column} `{subject}` {what} {_value(value, unit)}{times}",
        "text": f"Org `{org}`: the {what} of {subject_column} `{subject}` is {_value(value, unit)}, against a"
        f" recent baseline of {_value(baseline, unit)}{times}.",
        "budget": None,
        "anomaly": {
            "kind": kind,
            "feature": found.get("feature"),
            "provider": found.get("provider"),
            "model": found.get("model"),
            "bucket": _iso(bucket) if isinstance(bucket, dt.datetime) else None,
            "value": value,
            "baseline": baseline,
            "ratio": ratio,
            "z": found.get("z"),
        },
    }


def probe_alert(org: str, now: dt.datetime) -> dict[str, Any]:
    """`lectr alert test`: proves the webhook receives Lectr's alerts."""
    return {
        "type": "lectr.alert",
        "version": VERSION,
        "kind": "test",
        "org": org,
        "created_at": _iso(now),
        "title": "Test alert from Lectr",
        "text": f"Org `{org}`: this webhook receives Lectr's budget and anomaly alerts.",
        "budget": None,
        "anomaly": None,
    }


def render(payload: dict[str, Any], alert_id: int, fmt: str) -> dict[str, Any]:
    """The body sent to a webhook: the JSON object with its alert id, or a Slack incoming-webhook
    message (`text` as the notification fallback, the same in a mrkdwn section block)."""
    if fmt == "slack":
        text = f"*{payload['title']}*\n{payload['text']}"
        return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}
    return {**payload, "alert_id": alert_id}


__all__ = ["VERSION", "anomaly_alert", "budget_alert", "probe_alert", "render"]
