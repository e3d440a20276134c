"""Settings refuse values the product cannot honour, at start-up, with the reason."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def settings_import(**env: str) -> subprocess.CompletedProcess:
    # A DATABASE_URL that is never connected to: importing settings must not start a server.
    environment = {
        **os.environ,
        "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none",
        "DEBUG": "true",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", "import abaco.settings"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_write_off_threshold_beyond_the_last_bucket_is_refused():
    result = settings_import(WRITE_OFF_DPD="360")
    assert result.returncode != 0
    assert "WRITE_OFF_DPD must be between 1 and 180" in result.stderr


def test_production_refuses_to_start_without_its_secrets():
    result = settings_import(DEBUG="false", DATABASE_URL="", SECRET_KEY="", ALLOWED_HOSTS="")
    assert result.returncode != 0
    assert "set SECRET_KEY, ALLOWED_HOSTS, DATABASE_URL" in result.stderr


def test_an_unresolved_key_vault_reference_is_refused():
    # App Service hands on a reference it cannot resolve as its text (infra/azure/modules/web.bicep).
    result = settings_import(
        SLACK_WEBHOOK_URL="@Microsoft.KeyVault(VaultName=abacoproductionkv;SecretName=slack-webhook-url)"
    )
    assert result.returncode != 0
    assert "Key Vault reference(s) not resolved by App Service: SLACK_WEBHOOK_URL" in result.stderr


def test_a_retry_shorter_than_the_task_timeout_is_refused():
    result = settings_import(Q_TIMEOUT="600", Q_RETRY="300")
    assert result.returncode != 0
    assert "Q_RETRY must be longer than Q_TIMEOUT" in result.stderr


def test_the_ai_insights_refuse_an_unknown_api_and_a_price_that_is_no_decimal():
    result = settings_import(OPENAI_API="completions")
    assert result.returncode != 0
    assert "OPENAI_API must be 'responses' or 'chat'" in result.stderr
    result = settings_import(OPENAI_RUN_COST_LIMIT="half a dollar")
    assert result.returncode != 0
    assert "OPENAI_RUN_COST_LIMIT must be a decimal number, not 'half a dollar'" in result.stderr


def test_the_model_stays_off_without_its_key_even_when_enabled():
    probe = "from django.conf import settings; print(settings.OPENAI_ENABLED)"
    environment = {**os.environ, "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none"}
    environment.update(DEBUG="true", OPENAI_ENABLED="true", OPENAI_API_KEY="")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'abaco.settings'); django.setup(); {probe}",
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.stdout.strip() == "False", result.stderr
