"""Azure OpenAI: per-org endpoint, the model names the deployment, the key moves to `api-key`."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode

from proxy.core.errors import AzureNotConfigured
from proxy.pipeline.providers.base import Call, Target, bearer_token


@dataclass(frozen=True, slots=True)
class Azure:
    name: str = "azure"

    def target(self, call: Call) -> Target:
        org = call.org
        if not org.azure_endpoint:
            raise AzureNotConfigured(
                "Azure OpenAI needs your endpoint first: run `lectr org azure "
                f"{org.name} --endpoint https://<resource>.openai.azure.com [--api-version 2024-02-01]` "
                "or set it on the dashboard's Settings page."
            )
        if org.azure_refused:
            # Stored before SPEC §3's endpoint rule (or by hand) and outside it: never contacted.
            raise AzureNotConfigured(
                f"the org's Azure endpoint is not allowed ({org.azure_refused}); set it again with `lectr org azure "
                f"{org.name} --endpoint https://<resource>.openai.azure.com` or on the dashboard's Settings page "
                "(for a gateway of your own, the operator lists its host in LECTR_AZURE_ALLOWED_HOSTS)."
            )
        if call.model:
            url = f"{org.azure_endpoint}/openai/deployments/{quote(call.model, safe='')}/{call.path}"
        else:
            url = f"{org.azure_endpoint}/openai/{call.path}"
        query = parse_qsl(call.query.decode("latin-1"), keep_blank_values=True)
        params = [(k, v) for k, v in query if k != "api-version"]
        params.append(("api-version", org.azure_api_version))
        token = bearer_token(call.bearer)
        auth = ((b"api-key", token),) if token else ()
        if not token and b"api-key" in call.headers:
            auth = ((b"api-key", call.headers[b"api-key"]),)
        return Target(f"{url}?{urlencode(params)}", auth)
