"""The API's test cast: the role cast of tests/base.py, an API client, and tokens for them."""

from __future__ import annotations

from abaco.roles import Role
from api.models import ApiToken, Scope
from api.tokens import api_token_create
from tests.base import CastTestCase, user_create

ALL_SCOPES = list(Scope.values)


class ApiTestCase(CastTestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        super().setUpTestData()
        cls.client_user = user_create(username="cleo.client", role=Role.API_CLIENT)

    def token(self, user, scopes=ALL_SCOPES, **kwargs) -> str:
        return api_token_create(user=user, scopes=list(scopes), **kwargs)[1]

    def bearer(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def api_get(self, url: str, user=None, scopes=ALL_SCOPES, **kwargs):
        token = self.token(user or self.client_user, scopes)
        return self.client.get(url, headers=self.bearer(token), **kwargs)

    def problem(self, response) -> dict:
        self.assertEqual(response["Content-Type"], "application/problem+json")
        body = response.json()
        self.assertEqual(body["status"], response.status_code)
        return body


__all__ = ["ALL_SCOPES", "ApiTestCase", "ApiToken", "Scope"]
