"""The Debitoor (SumUp Invoices) API client shared by the Debitoor connector and the expenses source
(shared/reference/sources.md section 3, connectors.md section 6).

Authentication: the OAuth2 access token (it does not expire; there is no refresh token) in the
`x-token` header [C debitoor-api-docs], sent only to the block's hosts (tasks/oauth.py's BearerAuth
checks, applied to this header). Endpoints used, versioned at the end of the path:

- GET  {api}/expenses/v3                      the expense list (no filter is published)
- GET  {api}/expenses/{id}/v4                 one expense (schema v4: file{id,url,fileName,type,sizeBytes})
- POST {api}/expenses/v4?autonumber=true      a new expense; fileId names its file
- GET  {api root}{file.url}                    a file's bytes, file.url being /api/v1.0/files/{id}
- POST {files_url}                            the file upload [?]: one multipart part "file", answer {"id"}
Errors: 400, 401, 404, 412 (a data problem), 500, with an error object in the body [C].
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from tasks.http import HttpClient
from tasks.oauth import BearerAuth, TokenManager


class XTokenAuth(BearerAuth):
    """BearerAuth's host and https checks, the token in Debitoor's `x-token` header. No refresh: the token
    does not expire, so a 401 is the credentials refused."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        super().__call__(request)
        request.headers["x-token"] = request.headers.pop("Authorization").partition(" ")[2]
        return request

    refresh = None  # type: ignore[assignment]  # the HTTP layer refreshes only auths that have one


class DebitoorClient:
    def __init__(self, block: Any, label: str):
        self.block = block
        self.label = label
        hosts = [block.api_url] + ([block.files_url] if block.files_url else [])
        self.http = HttpClient(label, base_url=block.api_url, hosts=hosts, auth=XTokenAuth(TokenManager(block)),
                               secrets=block.secret_values(), ca_bundle=block.ca_bundle, verify=block.verify_tls,
                               timeout=(15, block.request_timeout), headers={"Accept": "application/json"},
                               notes={412: "Debitoor refused the data"})

    def close(self) -> None:
        self.http.close()

    def expenses(self, what: str = "expense list") -> list[dict]:
        body = self.http.json(self.http.get("expenses/v3", what=what), what)
        return list(body) if isinstance(body, list) else list((body or {}).get("items") or [])

    def expense(self, expense_id: str, what: str) -> dict | None:
        response = self.http.get(f"expenses/{expense_id}/v4", what=what, check=False)
        if response.status_code == 404:
            response.close()
            return None
        if (error := self.http.status_error(response, what)) is not None:
            response.close()
            raise error
        return self.http.json(response, what)

    def file_url(self, url: str) -> str:
        """An absolute URL for a file.url the API gives (a path below the API's host)."""
        if "://" in url:
            return url
        parts = urlsplit(self.block.api_url)
        return urlunsplit((parts.scheme, parts.netloc, url, "", ""))

    def download(self, url: str, what: str) -> requests.Response | None:
        response = self.http.get(self.file_url(url), what=what, stream=True, check=False)
        if response.status_code == 404:
            response.close()
            return None
        if (error := self.http.status_error(response, what)) is not None:
            response.close()
            raise error
        return response
