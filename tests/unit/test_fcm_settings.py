"""Which provider a device gets, the FCM and retry settings, and the wait between tries."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from smartsvc.config import ConfigError, Settings, load_settings
from smartsvc.delivery import LogProvider, PushMessage, provider_for
from smartsvc.delivery.fcm import FcmProvider
from smartsvc.services.delivery import retry_delay
from smartsvc.timeutil import utcnow

FCM_DEVICE = SimpleNamespace(platform="fcm")


def test_the_fcm_settings_are_read_and_checked():
    settings = load_settings({"SMARTSVC_FCM_URL": "http://127.0.0.1:9/", "SMARTSVC_FCM_PROJECT_ID": "demo",
                              "SMARTSVC_FCM_CREDENTIALS": "/etc/smartsvc/fcm.json",
                              "SMARTSVC_PUSH_MAX_TRIES": "3", "SMARTSVC_PUSH_RETRY_BACKOFF_S": "10, 60"})
    assert (settings.fcm_url, settings.fcm_project_id, settings.fcm_credentials) == \
        ("http://127.0.0.1:9", "demo", Path("/etc/smartsvc/fcm.json"))
    assert (settings.push_max_tries, settings.push_retry_backoff_s) == (3, (10, 60))
    defaults = load_settings({})
    assert (defaults.fcm_url, defaults.fcm_credentials, defaults.push_max_tries, defaults.push_retry_backoff_s) == \
        ("https://fcm.googleapis.com", None, 5, (30, 120, 600))


@pytest.mark.parametrize(("name", "value"), [
    ("FCM_URL", "fcm.googleapis.com"), ("PUSH_MAX_TRIES", "0"), ("PUSH_RETRY_BACKOFF_S", "30,,600"),
    ("PUSH_RETRY_BACKOFF_S", "-1"), ("PUSH_PROVIDER", "fcm"),
])
def test_a_bad_value_names_its_variable(name, value):
    with pytest.raises(ConfigError, match=f"SMARTSVC_{name}"):
        load_settings({f"SMARTSVC_{name}": value})


def test_a_device_gets_fcm_only_when_fcm_is_configured_and_not_forced_to_log(tmp_path):
    plain = Settings(var_dir=tmp_path)
    assert isinstance(provider_for(FCM_DEVICE, plain), LogProvider)
    configured = plain.replace(fcm_credentials=tmp_path / "sa.json", fcm_url="http://127.0.0.1:9")
    provider = provider_for(FCM_DEVICE, configured)
    assert isinstance(provider, FcmProvider) and provider.name == "fcm"
    assert provider_for(FCM_DEVICE, configured) is provider  # one pool and one OAuth token per process
    assert isinstance(provider_for(FCM_DEVICE, configured.replace(push_provider="log")), LogProvider)


def test_a_missing_credentials_file_fails_the_push_without_raising(tmp_path):
    settings = Settings(var_dir=tmp_path, fcm_credentials=tmp_path / "missing.json", fcm_url="http://127.0.0.1:9")
    now = utcnow()
    push = PushMessage(user_id=uuid.uuid4(), device_id=uuid.uuid4(), platform="fcm", suggestion_id=uuid.uuid4(),
                       kind="spots", title="Parking", body="3 spots", collapse_key="spots", at=now,
                       expires_at=now + timedelta(hours=1), token="t")
    result = provider_for(FCM_DEVICE, settings).send(push)
    assert not result.ok and not result.retryable and "missing.json" in result.error


def test_the_wait_follows_the_backoff_and_a_longer_retry_after_wins():
    settings = Settings()
    assert [retry_delay(settings, n, None).total_seconds() for n in (1, 2, 3, 4, 9)] == [30, 120, 600, 600, 600]
    assert retry_delay(settings, 1, 300).total_seconds() == 300
    assert retry_delay(settings, 3, 5).total_seconds() == 600
