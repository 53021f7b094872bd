"""Settings: production refuses missing and default secrets, and never shows them."""

from __future__ import annotations

import pytest

from vigil.errors import ConfigurationError
from vigil.settings import Profile, Settings, load_settings, production_problems

GOOD = {
    "VIGIL_PROFILE": "production",
    "VIGIL_DATABASE_URL": "postgresql://vigil:Kq3-vw9.Zr4-xT7@db.internal:5432/vigil",
    "VIGIL_BROKER_URL": "redis://:Mb8-Lq2.Wz6-pR3@broker.internal:6379/0",
    "VIGIL_S3_ENDPOINT": "https://s3.example.internal",
    "VIGIL_S3_ACCESS_KEY": "AKIAEXAMPLE12345",
    "VIGIL_S3_SECRET_KEY": "wJalrXUtnFEMI-K7MDENG-bPxRfiCY",
}


@pytest.fixture
def production_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key, value in GOOD.items():
        monkeypatch.setenv(key, value)
    return monkeypatch


def test_a_complete_production_configuration_loads(production_env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.profile is Profile.PRODUCTION
    assert settings.sqlalchemy_url().startswith("postgresql+psycopg://")
    assert settings.s3_credentials()[0] == "https://s3.example.internal"


@pytest.mark.parametrize(("variable", "value", "secret", "expected"), [
    ("VIGIL_S3_SECRET_KEY", "minioadmin", "minioadmin",
     "VIGIL_S3_SECRET_KEY is a well-known default"),
    ("VIGIL_S3_ACCESS_KEY", "Zq7x", "Zq7x", "VIGIL_S3_ACCESS_KEY is shorter than"),
    ("VIGIL_DATABASE_URL", "postgresql://app:changeme@db/vigil", "changeme",
     "the password in VIGIL_DATABASE_URL is a well-known default"),
    ("VIGIL_DATABASE_URL", "postgresql://app:Xy9@db/vigil", "Xy9",
     "the password in VIGIL_DATABASE_URL is shorter than"),
    ("VIGIL_BROKER_URL", "amqp://guest:guest@mq//", ":guest",
     "the password in VIGIL_BROKER_URL is a well-known default"),
    ("VIGIL_BROKER_URL", "amqp://mq.internal//", "mq.internal",
     "RabbitMQ's default guest account"),
])
def test_production_refuses_default_secrets_by_name_not_value(
        production_env: pytest.MonkeyPatch, variable: str, value: str, secret: str,
        expected: str) -> None:
    production_env.setenv(variable, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert expected in str(info.value)
    assert secret not in str(info.value)


@pytest.mark.parametrize("variable", ["VIGIL_DATABASE_URL", "VIGIL_BROKER_URL",
                                      "VIGIL_S3_ENDPOINT", "VIGIL_S3_SECRET_KEY"])
def test_production_refuses_missing_settings(production_env: pytest.MonkeyPatch,
                                             variable: str) -> None:
    production_env.delenv(variable)
    with pytest.raises(ConfigurationError, match=f"{variable} is not set"):
        load_settings()


def test_every_problem_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_PROFILE", "production")
    for key in GOOD:
        if key != "VIGIL_PROFILE":
            monkeypatch.delenv(key, raising=False)
    problems = production_problems(Settings())
    assert len(problems) == 5


def test_embedded_profile_without_a_stack_says_what_to_do(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_PROFILE", "embedded")
    monkeypatch.setenv("VIGIL_HOME", str(tmp_path))
    monkeypatch.delenv("VIGIL_DATABASE_URL", raising=False)
    settings = load_settings()
    with pytest.raises(ConfigurationError, match="vigil stack up"):
        settings.sqlalchemy_url()


def test_secrets_do_not_appear_in_the_settings_repr(production_env: pytest.MonkeyPatch) -> None:
    text = repr(load_settings()) + str(load_settings().model_dump())
    for secret in ("Kq3-vw9.Zr4-xT7", "Mb8-Lq2.Wz6-pR3", "wJalrXUtnFEMI-K7MDENG-bPxRfiCY",
                   "AKIAEXAMPLE12345"):
        assert secret not in text


@pytest.mark.parametrize(("broker", "backend"), [
    ("redis://:pw@127.0.0.1:6379/0", "redis://:pw@127.0.0.1:6379/1"),
    ("amqp://vigil:pw@mq.internal//", "rpc://"),
])
def test_task_results_follow_the_broker(broker: str, backend: str) -> None:
    from vigil.tasks import _result_backend

    assert _result_backend(broker) == backend
