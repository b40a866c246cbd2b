"""Paired A/B at 1 request in flight: two proxies that differ only in their environment.

    python bench/ab.py --a "LECTR_WRITER_FLUSH_SECONDS=0.1" --b "LECTR_WRITER_FLUSH_SECONDS=1000" \
        [--scenario chat|stream|embeddings|body100k] [--rounds 20]

A full `run.py` compares runs made minutes apart, and this VM's noise drifts over seconds, so a
change worth a few hundred µs at p99 disappears in it. Here both proxies run at once on the same
nginx and embedded Postgres, and nginx direct, A and B take turns in 1-second rounds at 1 in
flight (A and B swap order every round), each request timed by the client (`wrk.lua`,
`BENCH_TIMED=1`). Prints p50/p90/p99/p99.9 per side and the proxies' CPU per request. To compare
two versions of the code, put the difference behind an environment variable for the run
(`docs/PERFORMANCE.md` step 14 is an example), or run one side from another checkout with
`--a-root` / `--b-root` (e.g. `git worktree add /tmp/base <commit>`, then `--a-root /tmp/base`:
that side's proxy imports its `proxy` package from there). Needs what `run.py` needs.

`--budgets A|B|both` gives that side's org the budgets of the worst case for the hot path's check (issue
17): a hard budget on all its traffic, not reached (its spend is tracked on every event), and a
hard budget on another feature, reached (so the org is in the tracker's reached set and every
request compares its feature with it).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Database, ProxyProcess, wrk  # noqa: E402
from run import EMBEDDINGS, Run, _load, _merge, big_body, chat_body  # noqa: E402
from upstream import Upstream  # noqa: E402

from proxy.store.db.connection import stop_embedded  # noqa: E402

_SCENARIOS: dict[str, tuple[str, bytes, str]] = {
    "chat": ("/v1/chat/completions", chat_body(), ""),
    "stream": ("/v1/chat/completions", chat_body(stream=True), "stream"),
    "embeddings": ("/v1/embeddings", EMBEDDINGS, ""),
    "body100k": ("/v1/chat/completions", big_body(), ""),
}


def _env(text: str) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in text.split()]
    if any(len(pair) != 2 for pair in pairs):
        raise SystemExit(f"expected KEY=VALUE pairs separated by spaces, got {text!r}")
    return {key: value for key, value in pairs}


def _add_budgets(url: str, org_id: int) -> None:
    """A hard budget on all the org's traffic that is never reached, and a reached one on another
    feature (its spend in the rollups); the proxies load them within their refresh interval."""
    import datetime as dt

    from proxy.store.db import connect

    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    with connect(url) as conn:
        if conn.execute("SELECT to_regclass('budgets')").fetchone()[0] is None:
            raise SystemExit("--budgets: the database has no budgets table (start a side with this checkout)")
        conn.execute("INSERT INTO budgets (org_id, period, limit_usd, hard) VALUES (%s, 'month', 1e9, true)", (org_id,))
        conn.execute(
            "INSERT INTO budgets (org_id, feature, period, limit_usd, hard) VALUES (%s, 'elsewhere', 'day', 1, true)",
            (org_id,),
        )
        conn.execute(
            "INSERT INTO rollup_hourly (org_id, hour, feature, provider, requests, cost_usd)"
            " VALUES (%s, %s, 'elsewhere', 'openai', 1, 5)",
            (org_id, hour),
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", default="", help='environment of proxy A: "KEY=VALUE ..." (default: none)')
    parser.add_argument("--b", default="", help='environment of proxy B: "KEY=VALUE ..."')
    parser.add_argument("--a-root", type=Path, help="run proxy A from this checkout (default: this one)")
    parser.add_argument("--b-root", type=Path, help="run proxy B from this checkout")
    parser.add_argument("--scenario", choices=_SCENARIOS, default="chat")
    parser.add_argument("--rounds", type=int, default=20, help="1-second rounds per side (default 20)")
    parser.add_argument("--budgets", choices=("A", "B", "both"), help="give that side's org budgets (see above)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None or (shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists()):
        raise SystemExit("`nginx` and `wrk` are needed: apt-get install -y nginx libnginx-mod-http-echo wrk")
    path, body, mode = _SCENARIOS[args.scenario]
    sides = {"A": _env(args.a), "B": _env(args.b)}
    roots = {"A": args.a_root, "B": args.b_root}
    with tempfile.TemporaryDirectory(prefix="lectr-ab-") as tmp:
        work = Path(tmp)
        upstream = Upstream(work / "nginx").start()
        proxies: dict[str, tuple[ProxyProcess, str]] = {}
        try:
            db = Database.start(work / "pg")
            run = Run(argparse.Namespace(duration=1), db, upstream, work)
            body_file = run.body_file("ab", body)
            orgs = {}
            for side, extra in sides.items():
                proxy, org_id, key = run.start_proxy(f"ab-{side}", upstream.fast_url, extra_env=extra, root=roots[side])
                proxies[side] = (proxy, key)
                orgs[side] = org_id
            for side, org_id in orgs.items():
                if args.budgets in (side, "both"):
                    _add_budgets(db.url, org_id)
            for proxy, key in proxies.values():  # warm up: pools, first flushes
                wrk(proxy.url + path, connections=50, duration=1, body_file=body_file, key=key, mode=mode)
            base = f"http://127.0.0.1:{upstream.fast_port}{path}"
            results: dict[str, list[dict[str, Any]]] = {"nginx": [], "A": [], "B": []}
            for index in range(args.rounds):
                results["nginx"].append(_load(run, base, 1, body_file, proxies["A"][1], mode, duration=1))
                for side in ("A", "B") if index % 2 == 0 else ("B", "A"):
                    proxy, key = proxies[side]
                    results[side].append(
                        _load(run, proxy.url + path, 1, body_file, key, mode, proxy.worker_pids(), duration=1)
                    )
                print(f"round {index + 1}/{args.rounds}", end="\r", flush=True)
            print()
        finally:
            for proxy, _ in proxies.values():
                proxy.stop()
            upstream.stop()
            stop_embedded(work / "pg")
    print(f"{args.scenario}, 1 in flight, {args.rounds} rounds of 1 s per side")
    print(f"{'side':<6} {'requests':>8} {'p50':>7} {'p90':>7} {'p99':>7} {'p99.9':>7} {'CPU/req':>8}  (ms)")
    for side, rounds in results.items():
        merged = _merge(rounds)
        latency = merged["latency_us"]
        cpu = f"{merged['cpu_s_per_1000']:.3f}" if side != "nginx" else ""
        figures = " ".join(f"{latency[q] / 1000:>7.2f}" for q in ("p50", "p90", "p99", "p999"))
        print(f"{side:<6} {latency['n']:>8} {figures} {cpu:>8}")
    for side, extra in sides.items():
        budgets = " with budgets" if args.budgets in (side, "both") else ""
        print(f"{side}: {' '.join(f'{k}={v}' for k, v in extra.items()) or '(defaults)'}{budgets}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
