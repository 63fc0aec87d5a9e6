"""Flags, their environment variables, and the errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlmodel_server.config import default_workers, parse_settings
from mlmodel_server.fetch import Credentials


def test_flags_override_environment_which_overrides_defaults() -> None:
    env = {"MODEL_URI": "/m.joblib", "MODEL_NAME": "iris", "PORT": "9000", "MODEL_VARIANT": "canary"}
    settings = parse_settings(["--port", "9100"], env)
    assert (settings.model_uri, settings.model_name, settings.port, settings.variant) == (
        "/m.joblib",
        "iris",
        9100,
        "canary",
    )
    assert settings.workers == default_workers()
    assert settings.preload and not settings.allow_unpinned


def test_every_listed_variable_is_read() -> None:
    env = {
        "MODEL_URI": "s3://b/m.joblib",
        "MODEL_SHA256": "a" * 64,
        "WORKERS": "3",
        "THREADS": "8",
        "MAX_BATCH_SIZE": "50",
        "MAX_BATCH_WAIT_MS": "0.5",
        "MAX_BODY_BYTES": "1000",
        "API_KEYS_FILE": "/keys",
        "ALLOW_UNPINNED": "true",
        "PRELOAD": "false",
        "SKOPS_TRUSTED": "a.B, c.D",
    }
    s = parse_settings([], env)
    assert (s.model_sha256, s.workers, s.threads, s.max_batch_size) == ("a" * 64, 3, 8, 50)
    assert (s.max_batch_wait_ms, s.max_body_bytes, s.api_keys_file) == (0.5, 1000, Path("/keys"))
    assert s.allow_unpinned and not s.preload
    assert s.skops_trusted == ("a.B", "c.D")


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {}, "--model-uri (or MODEL_URI) is required"),
        (["--model-uri", "m", "--workers", "0"], {}, "--workers must be at least 1"),
        (["--model-uri", "m"], {"PORT": "http"}, "environment variable PORT"),
        (["--model-uri", "m"], {"PRELOAD": "maybe"}, "environment variable PRELOAD"),
        (["--model-uri", "m", "--max-batch-wait-ms", "-1"], {}, "must not be negative"),
    ],
)
def test_bad_settings_are_named(
    argv: list[str], env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_settings(argv, env)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("var", "expected"),
    [("PORT", "an integer"), ("MAX_BATCH_WAIT_MS", "a number"), ("PRELOAD", "true or false")],
)
def test_env_errors_never_echo_the_value(var: str, expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    secret = "s3cr3t-Tok3n-from-a-secretKeyRef"
    with pytest.raises(SystemExit):
        parse_settings(["--model-uri", "m"], {var: secret})
    err = capsys.readouterr().err
    assert f"environment variable {var}: expected {expected}" in err
    assert secret not in err


def test_json_limit_defaults_below_the_body_limit() -> None:
    s = parse_settings(["--model-uri", "m"], {"MAX_JSON_BYTES": "2048"})
    assert (s.max_json_bytes, s.max_body_bytes) == (2048, 10 * 1024 * 1024)
    assert parse_settings(["--model-uri", "m"], {}).max_json_bytes == 1024 * 1024


SCHEMA = '[{"type": "double", "name": "sepal length (cm)", "required": true}]'


def test_input_schema_is_kept_verbatim_for_the_server_to_parse() -> None:
    assert parse_settings(["--model-uri", "m", "--input-schema", SCHEMA], {}).input_schema == SCHEMA
    assert parse_settings(["--model-uri", "m"], {"INPUT_SCHEMA": SCHEMA}).input_schema == SCHEMA
    assert parse_settings(["--model-uri", "m"], {"INPUT_SCHEMA": ""}).input_schema is None


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"MLFLOW_TRACKING_TOKEN": "t0k3n"}, Credentials(token="t0k3n")),
        (
            {"MLFLOW_TRACKING_USERNAME": "reader", "MLFLOW_TRACKING_PASSWORD": "pa55"},
            Credentials(username="reader", password="pa55"),
        ),
        (  # as MLflow does: a user name and password win over a token
            {
                "MLFLOW_TRACKING_TOKEN": "t0k3n",
                "MLFLOW_TRACKING_USERNAME": "reader",
                "MLFLOW_TRACKING_PASSWORD": "pa55",
            },
            Credentials(username="reader", password="pa55"),
        ),
        ({"MLFLOW_TRACKING_TOKEN": ""}, None),  # an optional Secret key that is empty
    ],
)
def test_download_credentials_come_from_mlflows_variables(env: dict[str, str], expected: Credentials | None) -> None:
    settings = parse_settings(["--model-uri", "m"], env)
    assert settings.credentials == expected
    for value in env.values():
        assert not value or value not in repr(settings)


def test_credentials_are_no_flags_and_come_in_pairs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_settings(["--model-uri", "m", "--mlflow-tracking-token", "t0k3n"], {})
    with pytest.raises(SystemExit):
        parse_settings(["--model-uri", "m"], {"MLFLOW_TRACKING_USERNAME": "reader"})
    err = capsys.readouterr().err
    assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD go together" in err and "reader" not in err
