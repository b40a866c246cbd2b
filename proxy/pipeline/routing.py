"""Routing rules and fallbacks, evaluated in memory on the hot path (pure; no I/O).

A rule matches on any combination of feature, task, requested model and detected provider
(exact values; an empty condition matches anything) and sends the request to another model (and
provider). The enabled rule with the lowest `priority` (then the lowest id) that matches wins.
Fallbacks, from the rule or the org's default, are tried in order when the provider answers 429
or 5xx or cannot be reached, before anything has been sent to the client.

A provider key is only ever sent to the provider it belongs to: a target on another provider
needs that provider's key in `X-Lectr-Auth-<Provider>` (e.g. `X-Lectr-Auth-Anthropic: Bearer ...`);
without it, that target is skipped.

A target (`provider:model` or `model`) is read by the provider registry's `parse_target`
(proxy/core/providers.py), which the store also uses to check a rule before saving it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxy.core.providers import Target, parse_target

__all__ = ["MAX_ATTEMPTS", "OrgRouting", "Plan", "Rule", "Target", "build", "parse_target"]

# At most this many upstream attempts per request (the first one included).
MAX_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Rule:
    id: int
    priority: int
    feature: str | None
    task: str | None
    model: str | None
    provider: str | None
    to: Target
    fallbacks: tuple[Target, ...] = ()
    enabled: bool = True

    def matches(self, feature: str | None, task: str | None, model: str | None, provider: str) -> bool:
        return (
            self.enabled
            and (self.feature is None or self.feature == feature)
            and (self.task is None or self.task == task)
            and (self.model is None or self.model == model)
            and (self.provider is None or self.provider == provider)
        )


@dataclass(frozen=True, slots=True)
class Plan:
    rule_id: int | None
    targets: tuple[Target, ...]  # attempts in order; the first is where the request goes


# Distinct (feature, task, model, provider) combinations remembered per org before starting over.
_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class OrgRouting:
    rules: tuple[Rule, ...] = ()  # sorted: priority, then id
    fallbacks: tuple[Target, ...] = ()
    # Decisions by request signature: an org sees few distinct ones, so the scan runs once each.
    # (A reload builds a new OrgRouting, so the cache never outlives the rules it was made from.)
    _cache: dict[tuple[str | None, str | None, str | None, str], Plan | None] = field(
        default_factory=dict, compare=False, repr=False
    )

    def plan(self, feature: str | None, task: str | None, model: str | None, provider: str) -> Plan | None:
        """Where this request goes; None when nothing changes (no rule fired, no fallbacks)."""
        key = (feature, task, model, provider)
        try:
            return self._cache[key]
        except KeyError:
            pass
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        found = self._cache[key] = self._scan(feature, task, model, provider)
        return found

    def _scan(self, feature: str | None, task: str | None, model: str | None, provider: str) -> Plan | None:
        for rule in self.rules:
            if rule.matches(feature, task, model, provider):
                targets = (rule.to, *(rule.fallbacks or self.fallbacks))
                return Plan(rule.id, _dedupe(targets)[:MAX_ATTEMPTS])
        if self.fallbacks and model:
            return Plan(None, _dedupe((Target(provider, model), *self.fallbacks))[:MAX_ATTEMPTS])
        return None


def _dedupe(targets: tuple[Target, ...]) -> tuple[Target, ...]:
    seen: list[Target] = []
    for target in targets:
        if target not in seen:
            seen.append(target)
    return tuple(seen)


def build(rows: list[tuple[Any, ...]], fallbacks: list[str] | None) -> OrgRouting:
    """An org's routing from its rule rows: (id, priority, enabled, feature, task, model, provider,
    to_model, to_provider, fallbacks)."""
    rules = []
    for rid, priority, enabled, feature, task, model, provider, to_model, to_provider, rule_fallbacks in rows:
        to = parse_target(str(to_model), str(to_provider) if to_provider else None)
        rules.append(
            Rule(
                id=int(rid),
                priority=int(priority),
                feature=feature or None,
                task=task or None,
                model=model or None,
                provider=provider or None,
                to=to,
                fallbacks=tuple(parse_target(str(f)) for f in (rule_fallbacks or ())),
                enabled=bool(enabled),
            )
        )
    rules.sort(key=lambda r: (r.priority, r.id))
    return OrgRouting(tuple(rules), tuple(parse_target(f) for f in (fallbacks or ())))
