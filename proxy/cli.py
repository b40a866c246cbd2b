"""The `lectr` command. Machine-readable where it matters: a new key is alone on the last line."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from proxy.core.config import Settings
from proxy.core.providers import PROVIDERS
from proxy.ops.logs import configure_logging
from proxy.store.db import connect, database_url, migrate
from proxy.store.orgs import OrgError, create_org, rotate_key, set_azure

Handler = Callable[[argparse.Namespace, psycopg.Connection[Any], Settings], int]


def _open(settings: Settings) -> psycopg.Connection[Any]:
    conn = connect(database_url(settings))
    migrate(conn)
    return conn


def cmd_migrate(args: argparse.Namespace, conn: psycopg.Connection[Any], settings: Settings) -> int:
    print("schema is up to date")
    return 0


def cmd_org_create(args: argparse.Namespace, conn: psycopg.Connection[Any], settings: Settings) -> int:
    org, key = create_org(conn, args.name)
    print(f"created org {org.name!r}; its key is shown once, store it now:", file=sys.stderr)
    print(key)
    return 0


def cmd_org_rotate(args: argparse.Namespace, conn: psycopg.Connection[Any], settings: Settings) -> int:
    key = rotate_key(conn, args.name)
    print(f"revoked every key of {args.name!r}; the new key is shown once:", file=sys.stderr)
    print(key)
    return 0


def cmd_org_azure(args: argparse.Namespace, conn: psycopg.Connection[Any], settings: Settings) -> int:
    org = set_azure(conn, args.name, args.endpoint, args.api_version, allowed_hosts=settings.azure_allowed_hosts)
    print(f"org {org.name!r}: Azure endpoint {org.azure_endpoint} (api-version {org.azure_api_version})")
    return 0


def cmd_route_add(args: argparse.Namespace, conn: psycopg.Connection[Any], settings: Settings) -> int:
    from proxy.store.rules import add_rule

    rule_id = add_rule(
        conn,
        args.name,
        to_model=args.to_model,
        feature=args.feature,
        task=args.task,
        model=args.model,
        provider=args.provider,
        to_provider=args.to_provider,
        priority=args.priority,
        fallbacks=args.fallback,
    )
    print(f"added routing rule {rule_id} to {args.name!r}; every worker applies it within 5 s", file=sys.stderr)
    print(rule_id)
    return 0


def cmd_route_list(args: argparse.Namespace, conn: psycopg.Connection[Any], settings: Settings) -> int:
    from proxy.store.rules import list_rules, rule_parts

    rules = list_rules(conn, args.name)
    if args.json:
        print(json.dumps(rules))
        return 0
    if not rules:
        print(f"org {args.name!r} has no routing rules")
        return 0
    print(f"{'id':>5} {'prio':>5} {'on':>3}  {'when':<50} → target (fallbacks)")
    for rule in rules:
        conditions, target, fallbacks = rule_parts(rule)
        when = ", ".join(f"{label}={value}" for label, value in conditions) or "any request"
        also = f" ({', '.join(fallbacks)})" if fallbacks else ""
        on = "yes" if rule["enabled"] else "no"
        print(f"{rule['id']:>5} {rule['priority']:>5} {on:>3}  {when:<50} → {target}{also}")
    return 0


def cmd_route_rm(args: argparse.Namespace, conn: psycopg.Connection[Any], settings: Settings) -> int:
    from proxy.store.rules import remove_rule

    remove_rule(conn, args.name, args.id)
    print(f"removed routing rule {args.id} from {args.name!r}")
    return 0


def cmd_route_fallbacks(args: argparse.Namespace, conn: psycopg.Connection[Any], settings: Settings) -> int:
    from proxy.store.rules import set_fallbacks

    set_fallbacks(conn, args.name, args.models)
    print(f"org {args.name!r} default fallbacks: {', '.join(args.models) or 'none'}")
    return 0


def cmd_budget_add(args: argparse.Namespace, conn: psycopg.Connection[Any], settings: Settings) -> int:
    from proxy.store.budgets import add_budget, parse_alert_at

    budget_id = add_budget(
        conn,
        args.name,
        limit_usd=args.limit_usd,
        period=args.period,
        feature=args.feature,
        hard=args.hard,
        alert_at=parse_alert_at(args.alert_at),
    )
    scope = f"feature {args.feature!r}" if args.feature else "the whole org"
    kind = "hard (requests over it get 429)" if args.hard else "soft (alerts only)"
    print(f"added {kind} budget {budget_id} to {args.name!r}: ${args.limit_usd} a {args.period} on {scope};"
          " every worker applies it within seconds", file=sys.stderr)
    print(budget_id)
    return 0


def cmd_budget_list(args: argparse.Namespace, conn: psycopg.Connection[Any], settings: Settings) -> int:
    from proxy.store.budgets import list_budgets

    budgets = list_budgets(conn, args.name)
    if args.json:
        print(json.dumps(budgets))
        return 0
    if not budgets:
        print(f"org {args.name!r} has no budgets")
        return 0
    print(f"{'id':>5} {'scope':<24} {'period':<6} {'limit $':>12} {'spent $':>12} {'%':>7} {'hard':<4}  alerts at")
    for b in budgets:
        scope = f"feature {b['feature']}" if b["feature"] is not None else "whole org"
        alerts = ",".join(str(a) for a in b["alert_at"])
        print(f"{b['id']:>5} {scope[:24]:<24} {b['period']:<6} {b['limit_usd']:>12,.2f} {b['spend_usd']:>12,.4f}"
              f" {b['percent']:>6.1f}% {'yes' if b['hard'] else 'no':<4}  {alerts}")
    return 0


def cmd_budget_rm(args: argparse.Namespace, conn: psycopg.Connection[Any], settings: Settings) -> int:
    from proxy.store.budgets import remove_budget

    remove_budget(conn, args.name, args.id)
    print(f"removed budget {args.id} from {args.name!r}")
    return 0


def cmd_alert_webhook(args: argparse.Namespace, conn: psycopg.Connection[Any], settings: Settings) -> int:
    from proxy.store.webhooks import add_webhook

    webhook_id = add_webhook(conn, args.name, args.url, args.format, allow_private=settings.allow_private_upstreams)
    print(f"added {args.format} webhook {webhook_id} to {args.name!r}", file=sys.stderr)
    print(webhook_id)
    return 0


def cmd_alert_list(args: argparse.Namespace, conn: psycopg.Connection[Any], settings: Settings) -> int:
    from proxy.store.webhooks import list_webhooks

    hooks = list_webhooks(conn, args.name)
    if args.json:
        print(json.dumps(hooks))
        return 0
    if not hooks:
        print(f"org {args.name!r} has no alert webhooks")
        return 0
    for hook in hooks:
        print(f"{hook['id']:>5} {hook['format']:<6} {hook['url']}")
    return 0


def cmd_alert_rm(args: argparse.Namespace, conn: psycopg.Connection[Any], settings: Settings) -> int:
    from proxy.store.webhooks import remove_webhook

    remove_webhook(conn, args.name, args.id)
    print(f"removed webhook {args.id} from {args.name!r}")
    return 0


def cmd_alert_test(args: argparse.Namespace, conn: psycopg.Connection[Any], settings: Settings) -> int:
    from proxy.alerts.sender import send_test

    results = send_test(conn, args.name, settings)
    if not results:
        print(f"org {args.name!r} has no alert webhooks; add one with `lectr alert webhook {args.name} --url URL`")
        return 1
    for result in results:
        print(f"webhook {result.webhook_id} ({result.format}): {result.describe()}")
    return 0 if all(result.delivered for result in results) else 1


def cmd_report(args: argparse.Namespace, conn: psycopg.Connection[Any], settings: Settings) -> int:
    if args.by == "end-user":
        from analytics import end_users

        print(end_users.report(conn, args.org, days=args.days, as_json=args.json, feature=args.feature))
        return 0
    if args.feature is not None:
        raise OrgError("--feature narrows `--by end-user`; the feature report already lists every feature")
    from analytics.commands import report

    print(report(conn, args.org, days=args.days, as_json=args.json))
    return 0


def cmd_recommend(args: argparse.Namespace, conn: psycopg.Connection[Any], settings: Settings) -> int:
    from analytics.commands import recommend

    print(recommend(conn, args.org, as_json=args.json, data_dir=settings.data_dir))
    return 0


def cmd_demo(args: argparse.Namespace, conn: psycopg.Connection[Any], settings: Settings) -> int:
    from analytics.demo import generate
    from analytics.price_cache import cached_unit_prices, price_ladders

    with cached_unit_prices(settings.data_dir):
        key = generate(conn, days=args.days, progress=sys.stderr)
        # genai-prices is loaded for the demo's costs anyway: keep the ladders' unit prices, so
        # the `lectr recommend` that usually follows starts warm.
        price_ladders()
    print(key)
    return 0


def cmd_rollup_rebuild(args: argparse.Namespace, conn: psycopg.Connection[Any], settings: Settings) -> int:
    """Recompute the rollups from raw events a UTC day at a time (one transaction each, which
    writers wait for at their rollup upsert: see migration 006), with a progress bar on stderr."""
    from tqdm import tqdm

    from proxy.store.db.rollups import rebuild_days
    from proxy.store.orgs import get_org

    org_ids = None
    if args.org is not None:
        org_ids = [get_org(conn, args.org).id]
    days, chunks = rebuild_days(conn, org_ids, args.since)
    if not days:
        print("no raw events to rebuild rollups from", file=sys.stderr)
        return 0
    events = rows = 0
    with tqdm(total=len(days), unit="day", file=sys.stderr, desc="rollup rebuild", dynamic_ncols=True) as bar:
        for day, counted, written in chunks:
            events, rows = events + counted, rows + written
            bar.set_postfix_str(f"{day:%Y-%m-%d}, {events:,} events, {rows:,} rollup rows", refresh=False)
            bar.update()
    print(f"rebuilt the rollups of {days[0]:%Y-%m-%d} to {days[-1]:%Y-%m-%d}: {events:,} events, {rows:,} hourly rows")
    return 0


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def _positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lectr", description="Lectr: LLM proxy with cost analytics")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the proxy and the dashboard")
    up.add_argument("--proxy-port", type=int, default=None, help="proxy port (default $PORT or 8080)")
    up.add_argument("--dashboard-port", type=int, default=8501)
    up.add_argument(
        "--workers", type=_positive, default=None, help="proxy worker processes (default: one per CPU available)"
    )
    up.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 for all)")

    sub.add_parser("migrate", help="apply database migrations").set_defaults(handler=cmd_migrate)

    org = sub.add_parser("org", help="manage orgs and keys").add_subparsers(dest="org_command", required=True)
    p = org.add_parser("create", help="make an org and print its key")
    p.add_argument("name")
    p.set_defaults(handler=cmd_org_create)
    p = org.add_parser("rotate-key", help="revoke all keys of an org and print a new one")
    p.add_argument("name")
    p.set_defaults(handler=cmd_org_rotate)
    p = org.add_parser("azure", help="set the org's Azure OpenAI endpoint")
    p.add_argument("name")
    p.add_argument(
        "--endpoint",
        required=True,
        help="https://<resource>.openai.azure.com, or http(s)://HOST[:PORT][/PATH] for a HOST listed in"
        " LECTR_AZURE_ALLOWED_HOSTS",
    )
    p.add_argument("--api-version", default="2024-02-01")
    p.set_defaults(handler=cmd_org_azure)

    route = sub.add_parser("route", help="routing rules").add_subparsers(dest="route_command", required=True)
    p = route.add_parser("add", help="add a routing rule and print its id")
    p.add_argument("name", help="org name")
    p.add_argument("--feature")
    p.add_argument("--task")
    p.add_argument("--model", help="requested model to match")
    p.add_argument("--provider", help=f"detected provider to match: {', '.join(PROVIDERS)}")
    p.add_argument("--to-model", required=True)
    p.add_argument("--to-provider", help="the target's provider (default: the model's own)")
    p.add_argument("--priority", type=int, default=100, help="lower runs first (default 100)")
    p.add_argument(
        "--fallback",
        action="append",
        default=[],
        metavar="[PROVIDER:]MODEL",
        help="tried in order on 429/5xx/timeout (repeatable)",
    )
    p.set_defaults(handler=cmd_route_add)
    p = route.add_parser("list", help="list an org's routing rules")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_route_list)
    p = route.add_parser("rm", help="remove a routing rule")
    p.add_argument("name")
    p.add_argument("id", type=int)
    p.set_defaults(handler=cmd_route_rm)
    p = route.add_parser("fallbacks", help="set the org's default fallback models (none to clear)")
    p.add_argument("name")
    p.add_argument("models", nargs="*", metavar="[PROVIDER:]MODEL")
    p.set_defaults(handler=cmd_route_fallbacks)

    budget = sub.add_parser("budget", help="spending limits").add_subparsers(dest="budget_command", required=True)
    p = budget.add_parser("add", help="add a budget and print its id")
    p.add_argument("name", help="org name")
    p.add_argument("--limit-usd", required=True, help="the limit in US dollars")
    p.add_argument("--period", choices=("day", "month"), default="month", help="UTC day or month (default month)")
    p.add_argument("--feature", help="only this feature's requests (default: the whole org)")
    p.add_argument("--hard", action="store_true", help="refuse requests (429) once the limit is reached")
    p.add_argument("--alert-at", help="alert at these percentages of the limit (default 80,100)")
    p.set_defaults(handler=cmd_budget_add)
    p = budget.add_parser("list", help="list an org's budgets with their spend so far")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_budget_list)
    p = budget.add_parser("rm", help="remove a budget")
    p.add_argument("name")
    p.add_argument("id", type=int)
    p.set_defaults(handler=cmd_budget_rm)

    alert = sub.add_parser("alert", help="alert webhooks").add_subparsers(dest="alert_command", required=True)
    p = alert.add_parser("webhook", help="add a webhook for the org's alerts and print its id")
    p.add_argument("name")
    p.add_argument("--url", required=True, help="https:// URL of a public receiver (Slack incoming webhook, ...)")
    p.add_argument("--format", choices=("json", "slack"), default="json")
    p.set_defaults(handler=cmd_alert_webhook)
    p = alert.add_parser("list", help="list an org's webhooks")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_alert_list)
    p = alert.add_parser("rm", help="remove a webhook")
    p.add_argument("name")
    p.add_argument("id", type=int)
    p.set_defaults(handler=cmd_alert_rm)
    p = alert.add_parser("test", help="send one test alert to each webhook and say whether it was delivered")
    p.add_argument("name")
    p.set_defaults(handler=cmd_alert_test)

    p = sub.add_parser("report", help="per-feature (or per-end-user) cost, latency and errors")
    p.add_argument("--org", required=True)
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--by", choices=("feature", "end-user"), default="feature",
                   help="feature (default) or end-user: the top end users by cost (X-Lectr-User, or the body's user)")
    p.add_argument("--feature", help="with --by end-user: only this feature's traffic (`untagged` for none)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser("recommend", help="cheaper-model recommendations")
    p.add_argument("--org", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_recommend)

    rollup = sub.add_parser("rollup", help="the analytics rollups").add_subparsers(dest="rollup_command", required=True)
    p = rollup.add_parser("rebuild", help="recompute the rollups from raw events, a day at a time")
    p.add_argument("--org", help="only this org (default: every org)")
    p.add_argument("--since", type=_date, help="first UTC day to rebuild, YYYY-MM-DD (default: the first raw event)")
    p.set_defaults(handler=cmd_rollup_rebuild)

    p = sub.add_parser("demo", help="fill the org `demo` with generated traffic")
    p.add_argument("--days", type=int, default=30)
    p.set_defaults(handler=cmd_demo)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings)
    if args.command == "up":
        from proxy.ops.up import run_up

        return run_up(args, settings)
    try:
        with _open(settings) as conn:
            return int(args.handler(args, conn, settings))
    except OrgError as exc:
        print(f"lectr: {exc}", file=sys.stderr)
        return 2
    except psycopg.OperationalError as exc:
        print(f"lectr: cannot reach the database: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
