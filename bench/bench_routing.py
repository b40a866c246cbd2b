"""Routing's hot-path cost: `OrgRouting.plan` with 0, 10 and 100 rules (none or the last matching).

    python bench/bench_routing.py

The proxy's own overhead per request is ~1 ms (bench/README.md); this shows what routing adds.
"""

from __future__ import annotations

import timeit

from proxy.pipeline.routing import OrgRouting, build


def rules(n: int, last_matches: bool) -> OrgRouting:
    rows = [
        (i, i, True, f"feature-{i}", "classification", "gpt-4o", "openai", "gpt-4o-mini", None, []) for i in range(n)
    ]
    if last_matches and rows:
        rows[-1] = (n, n, True, "chat", None, None, None, "gpt-4o-mini", None, [])
    return build(rows, None)


def main() -> None:
    number = 100_000
    print(f"{'rules':>6} {'match':>6} {'us per request':>15}   (decisions are cached per request signature)")
    for n in (0, 10, 100):
        for last in (False, True):
            routing = rules(n, last)
            per = timeit.timeit(lambda r=routing: r.plan("chat", "generation", "gpt-4o", "openai"), number=number)
            print(f"{n:>6} {'last' if last else 'none':>6} {per / number * 1e6:>15.2f}")


if __name__ == "__main__":
    main()
