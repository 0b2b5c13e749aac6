"""OAuth2 access tokens for a Google API from a service-account file (google-auth over an httpx client).

google-auth signs the JWT assertion and posts it to the file's ``token_uri``
(so a local server can stand in for Google in tests); the token is kept
until google-auth considers it near expiry, then fetched again.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Union

import httpx
from google.auth import exceptions as auth_exceptions
from google.auth import transport
from google.oauth2 import service_account

TOKEN_TIMEOUT_S = 10.0


class CredentialsFileError(Exception):
    """The service-account file is missing or is not a service-account key."""


class _Response(transport.Response):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def data(self) -> bytes:
        return self._response.content


ClientSource = Union[httpx.Client, Callable[[], httpx.Client]]


class HttpxRequest(transport.Request):
    """google-auth's transport interface on an httpx client (the provider's pooled one).

    ``client`` is the client, or a function returning it at each request (a provider that reopens its
    client after being closed).
    """

    def __init__(self, client: ClientSource) -> None:
        self._client_of: Callable[[], httpx.Client] = (
            (lambda: client) if isinstance(client, httpx.Client) else client)

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Mapping[str, str] | None = None,
                 timeout: float | None = None, **kwargs: Any) -> transport.Response:
        try:
            response = self._client_of().request(method, url, content=body, headers=dict(headers or {}),
                                                 timeout=timeout or TOKEN_TIMEOUT_S)
        except httpx.HTTPError as exc:
            raise auth_exceptions.TransportError(f"{type(exc).__name__}: {exc}") from exc
        return _Response(response)


class ServiceAccountTokens:
    """Bearer tokens for ``scopes`` from the service-account file at ``path``; thread-safe, cached."""

    def __init__(self, path: Path, scopes: list[str], client: ClientSource) -> None:
        self.path = Path(path)
        self._scopes = list(scopes)
        self._request = HttpxRequest(client)
        self._lock = threading.Lock()
        self._credentials: service_account.Credentials | None = None
        self._project_id: str | None = None

    def _load(self) -> service_account.Credentials:
        if self._credentials is None:
            try:
                info = json.loads(self.path.read_text())
                self._credentials = service_account.Credentials.from_service_account_info(info, scopes=self._scopes)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise CredentialsFileError(f"cannot use service-account file {self.path}: {exc}") from exc
            self._project_id = info.get("project_id") or None
        return self._credentials

    @property
    def project_id(self) -> str | None:
        """The ``project_id`` of the file (None when it has none)."""
        with self._lock:
            self._load()
            return self._project_id

    def token(self) -> str:
        """A valid access token, fetched from ``token_uri`` only when none is cached or it is near expiry.

        Raises :class:`CredentialsFileError` or google-auth's ``RefreshError``/``TransportError``.
        """
        with self._lock:
            credentials = self._load()
            if not credentials.valid:
                credentials.refresh(self._request)
            return str(credentials.token)

    def forget(self) -> None:
        """Drop the cached token (the API refused it): the next :meth:`token` fetches a new one."""
        with self._lock:
            if self._credentials is not None:
                self._credentials.token = None
