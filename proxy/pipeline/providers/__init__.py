"""Providers: which one serves a request (`detect`) and how to talk to it (one adapter each).

Adapters build the upstream URL and rewrite the auth header; they do no I/O and import no web
framework, so each is a plain function table you can test on its own.
"""

from __future__ import annotations

from proxy.pipeline.providers.base import Adapter, Call, Target
from proxy.pipeline.providers.detect import PROVIDERS, Detection, detect
from proxy.pipeline.providers.registry import adapter_for

__all__ = ["PROVIDERS", "Adapter", "Call", "Detection", "Target", "adapter_for", "detect"]
