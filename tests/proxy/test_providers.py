"""Detection and adapters as plain functions."""

from __future__ import annotations

import pytest

from proxy.core.errors import AzureNotConfigured
from proxy.pipeline.providers import Call, adapter_for, detect
from proxy.store.orgs import Org

ORG = Org(1, "acme", None, "2024-02-01")
AZURE_ORG = Org(1, "acme", "https://res.openai.azure.com", "2024-06-01")


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("gpt-4o", "openai"),
        ("gpt-4.1-nano", "openai"),
        ("o1-preview", "openai"),
        ("o3", "openai"),
        ("o4-mini", "openai"),
        ("chatgpt-4o-latest", "openai"),
        ("text-embedding-3-small", "openai"),
        ("dall-e-3", "openai"),
        ("whisper-1", "openai"),
        ("tts-1-hd", "openai"),
        ("omni-moderation-latest", "openai"),
        ("claude-3-5-sonnet-20241022", "anthropic"),
        ("claude-opus-4-1", "anthropic"),
        ("llama-3.1-70b-versatile", "groq"),
        ("meta-llama/llama-guard-4-12b", "groq"),
        ("mixtral-8x7b-32768", "groq"),
        ("gemma2-9b-it", "groq"),
        ("qwen/qwen3-32b", "groq"),
        ("deepseek-r1-distill-llama-70b", "groq"),
        ("openai/gpt-oss-20b", "groq"),
        ("moonshotai/kimi-k2-instruct", "groq"),
        ("gemini-1.5-pro", "gemini"),
        ("gemini-2.5-flash", "gemini"),
        ("GPT-4O", "openai"),
    ],
)
def test_detect_from_model(model: str, provider: str) -> None:
    found = detect(model, None)
    assert (found.provider, found.unknown) == (provider, False)


@pytest.mark.parametrize(
    ("model", "header", "provider", "unknown"),
    [
        ("mystery-model", None, "openai", True),
        (None, None, "openai", True),
        ("gpt-4o", "anthropic", "anthropic", False),
        ("gpt-4o", "AZURE", "azure", False),
        ("claude-3-opus", "bogus", "openai", True),
    ],
)
def test_detect_with_header(model: str | None, header: str | None, provider: str, unknown: bool) -> None:
    found = detect(model, header)
    assert (found.provider, found.unknown) == (provider, unknown)


def test_openai_compatible_forwards_bearer() -> None:
    target = adapter_for("groq").target(
        Call(
            "https://api.groq.com/openai/v1",
            "chat/completions",
            b"",
            "llama-3.1-8b",
            ORG,
            b"Bearer gsk_x",
            {b"authorization": b"Bearer gsk_x"},
        )
    )
    assert target.url == "https://api.groq.com/openai/v1/chat/completions"
    assert target.auth == ((b"authorization", b"Bearer gsk_x"),)


def test_anthropic_rewrites_to_x_api_key_and_keeps_client_version() -> None:
    headers = {b"authorization": b"Bearer sk-ant-1", b"anthropic-version": b"2024-01-01"}
    target = adapter_for("anthropic").target(
        Call(
            "https://api.anthropic.com/v1", "chat/completions", b"", "claude-3", ORG, headers[b"authorization"], headers
        )
    )
    assert target.auth == ((b"x-api-key", b"sk-ant-1"), (b"anthropic-version", b"2024-01-01"))
    default = adapter_for("anthropic").target(
        Call("https://api.anthropic.com/v1", "models", b"", None, ORG, b"Bearer sk-ant-1", {})
    )
    assert (b"anthropic-version", b"2023-06-01") in default.auth


def test_azure_url_and_api_key() -> None:
    target = adapter_for("azure").target(
        Call("", "chat/completions", b"api-version=old&x=1", "my-deploy", AZURE_ORG, b"Bearer az-key", {})
    )
    assert target.url == (
        "https://res.openai.azure.com/openai/deployments/my-deploy/chat/completions?x=1&api-version=2024-06-01"
    )
    assert target.auth == ((b"api-key", b"az-key"),)


def test_azure_without_endpoint_says_how_to_configure() -> None:
    with pytest.raises(AzureNotConfigured, match="lectr org azure acme --endpoint"):
        adapter_for("azure").target(Call("", "chat/completions", b"", "d", ORG, b"Bearer k", {}))


@pytest.mark.parametrize(
    ("model", "header", "provider", "unknown"),
    [
        (None, None, "anthropic", False),  # models.list(), batches, files: no body
        ("my-fine-tune", None, "anthropic", False),
        ("gpt-4o", None, "openai", False),  # the model still wins
        (None, "groq", "groq", False),  # and so does X-Lectr-Provider
    ],
)
def test_detect_an_anthropic_client_by_its_version_header(
    model: str | None, header: str | None, provider: str, unknown: bool
) -> None:
    found = detect(model, header, anthropic_client=True)
    assert (found.provider, found.unknown) == (provider, unknown)
