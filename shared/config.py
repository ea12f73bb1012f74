"""Typed settings shared by every service (pydantic-settings, `SONGPOP_` environment variables or `.env`)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SPOTIFY_API_URL = "https://api.spotify.com/v1"
SPOTIFY_ACCOUNTS_URL = "https://accounts.spotify.com"
EMULATOR_HOST = "127.0.0.1"
EMULATOR_PORT = 8002
PLACEHOLDER_SECRETS = {"changeme", "changethis", "secret", "password", "xxx"}


S = TypeVar("S", bound="Settings")


class Environment(StrEnum):
    development = "development"
    production = "production"


class ConfigError(ValueError):
    """The configuration cannot work; the message says which variable and why."""


class Settings(BaseSettings):
    """Settings every service reads. Service-specific settings subclass this."""

    model_config = SettingsConfigDict(
        env_prefix="SONGPOP_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    environment: Environment = Environment.development
    log_level: str = "INFO"
    var_dir: Path = Path("var")
    database_url: str = Field(default="", repr=False)  # empty: embedded SQLite under var_dir
    mqtt_url: str = Field(default="", repr=False)  # empty: an embedded broker in-process
    mqtt_topic_root: str = "songpop/v1"
    mqtt_client_prefix: str = "songpop"
    mqtt_reconnect_seconds: float = 2.0
    mqtt_embedded_port: int = 18830  # the in-process broker's port when SONGPOP_MQTT_URL is empty
    heartbeat_seconds: float = Field(default=10.0, gt=0)  # ingestor/trainer liveness (shared.heartbeat)

    spotify_client_id: str | None = None
    spotify_client_secret: SecretStr | None = None
    spotify_api_url: str = ""
    spotify_accounts_url: str = ""
    spotify_market: str = "US"
    spotify_concurrency: int = Field(default=16, ge=1, le=256)
    spotify_max_retry_after_seconds: float = Field(default=60.0, ge=0)
    spotify_timeout_seconds: float = Field(default=10.0, gt=0)
    spotify_trending_playlist_id: str | None = None
    spotify_unknown_retry_days: float = Field(
        default=30.0, ge=0, description="ids Spotify does not know are not asked for again for this long"
    )

    charts_dir: Path = Path("charts")
    chart_region: str = "global"
    demo: bool = False  # use (and label) demo data; always on with the emulator

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str) -> str:
        if url and not url.startswith(("mysql+asyncmy://", "sqlite+aiosqlite://")):
            raise ConfigError("SONGPOP_DATABASE_URL must start with mysql+asyncmy:// or sqlite+aiosqlite://")
        return url

    @field_validator("mqtt_url")
    @classmethod
    def _known_broker(cls, url: str) -> str:
        if url and urlsplit(url).scheme not in ("mqtt", "mqtts"):
            raise ConfigError("SONGPOP_MQTT_URL must look like mqtt://user:password@host:1883")
        return url

    @model_validator(mode="after")
    def _credentials_are_real(self) -> Self:
        has_id, has_secret = bool(self.spotify_client_id), self.spotify_client_secret is not None
        if has_id != has_secret:
            raise ConfigError(
                "set both SONGPOP_SPOTIFY_CLIENT_ID and SONGPOP_SPOTIFY_CLIENT_SECRET, or neither"
            )
        if self.environment is Environment.production:
            problems = weak_production_secrets(self)
            if problems:
                raise ConfigError("production refuses weak secrets: " + "; ".join(problems))
        return self

    @model_validator(mode="after")
    def _emulator_data_is_demo(self) -> Self:
        # What the emulator serves is demo data: stored with that label, and models may learn from it.
        if self.uses_emulator:
            self.demo = True
        return self

    # Derived values: one place decides what "embedded" means.
    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.var_dir / 'songpop.db'}"

    @property
    def uses_emulator(self) -> bool:
        """True when no credentials are set: the local Spotify emulator stands in for Spotify."""
        return not self.spotify_client_id

    @property
    def effective_spotify_api_url(self) -> str:
        if self.spotify_api_url:
            return self.spotify_api_url.rstrip("/")
        if self.uses_emulator:
            return f"http://{EMULATOR_HOST}:{EMULATOR_PORT}/v1"
        return SPOTIFY_API_URL

    @property
    def effective_spotify_accounts_url(self) -> str:
        if self.spotify_accounts_url:
            return self.spotify_accounts_url.rstrip("/")
        if self.uses_emulator:
            return f"http://{EMULATOR_HOST}:{EMULATOR_PORT}"
        return SPOTIFY_ACCOUNTS_URL

    @property
    def models_dir(self) -> Path:
        return self.var_dir / "models"

    def redacted(self) -> dict[str, object]:
        """Settings safe to log or show: secrets and URL passwords replaced by stars."""
        shown = self.model_dump(mode="json")
        shown["spotify_client_secret"] = "**********" if self.spotify_client_secret else None
        for key in ("database_url", "mqtt_url"):
            shown[key] = redact_url(shown[key])
        return shown


MIN_SECRET_LENGTH = 8


def _weak(secret: str) -> bool:
    return len(secret) < MIN_SECRET_LENGTH or secret.lower() in PLACEHOLDER_SECRETS


def weak_production_secrets(settings: Settings) -> list[str]:
    """What production refuses, one sentence each (never the secret itself): an empty, placeholder or
    short Spotify secret, a broker anyone may use (no URL: the embedded one; a URL without user or with
    a weak password), a weak database password."""
    problems = []
    secret = settings.spotify_client_secret
    if settings.spotify_client_id and (secret is None or _weak(secret.get_secret_value())):
        problems.append("SONGPOP_SPOTIFY_CLIENT_SECRET is empty, a placeholder or too short")
    broker = urlsplit(settings.mqtt_url)
    if not settings.mqtt_url:
        problems.append("SONGPOP_MQTT_URL is not set (the embedded broker lets anyone connect)")
    elif not broker.username or _weak(broker.password or ""):
        problems.append(
            "SONGPOP_MQTT_URL needs a user and a real password (anonymous, placeholder or short refused)"
        )
    database_password = urlsplit(settings.database_url).password
    if database_password is not None and _weak(database_password):
        problems.append("the password in SONGPOP_DATABASE_URL is a placeholder or too short")
    return problems


def redact_url(url: str) -> str:
    """Replace the password in a URL with stars."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    return url.replace(f":{parts.password}@", ":****@", 1)


def load_settings(cls: type[S] = Settings, **overrides: object) -> S:  # type: ignore[assignment]
    """Build settings, turning validation errors into one readable ConfigError."""
    from pydantic import ValidationError

    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(_problem(err) for err in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from None


def _problem(err: Any) -> str:
    """One validation error in the user's words: the variable, what is wrong, the value given."""
    cause = err.get("ctx", {}).get("error")
    if isinstance(cause, Exception):  # our own validators' messages, without pydantic's prefix
        message = str(cause)
    else:
        message = err["msg"][0].lower() + err["msg"][1:]
        if isinstance(err.get("input"), str):
            message += f" (got {err['input']!r})"
    if not err["loc"]:
        return message
    return f"SONGPOP_{'_'.join(str(p) for p in err['loc']).upper()}: {message}"
