"""Predictor settings."""

from pydantic import Field, SecretStr

from shared.config import Settings

from .guard import FETCHES_PER_MINUTE


class PredictorSettings(Settings):
    predictor_host: str = "127.0.0.1"
    predictor_port: int = 8001
    predictor_share_group: str = Field(
        default="songpop-predictors",
        description="MQTT shared-subscription group: replicas split the events between them",
    )
    predictor_catch_up_seconds: float = Field(
        default=60.0, gt=0, description="how often to look for events left behind (outage, lost replica)"
    )
    max_batch: int = Field(default=100, ge=1, le=1000, description="track ids per POST /v1/forecasts")
    rest_cache_entries: int = Field(
        default=50_000,
        ge=0,
        description="answers of songs without a resident answer (forecast on demand) kept in memory, "
        "gzipped, least recently used out first (0: none)",
    )
    rest_cache_check_seconds: float = Field(
        default=1.0, ge=0, description="how often answers in memory are checked for new data (docs/rest.md)"
    )
    predictor_fastpath: bool = Field(
        default=True,
        description="answer resident songs before routing, tune the REST reads' engine, freeze the heap "
        "(services/predictor/fastpath; off: the plain FastAPI path, same answers)",
    )
    rest_cache_warm: bool = Field(
        default=True,
        description="keep every batch-scored song's answer resident in memory, rebuilt when its data changes",
    )
    api_keys: SecretStr | None = Field(
        default=None,
        description="comma-separated keys: when set, the forecast endpoints (which can reach Spotify) "
        "require one in X-API-Key or Authorization: Bearer",
    )
    rest_fetch_per_client_per_minute: int = Field(
        default=FETCHES_PER_MINUTE,
        ge=0,
        description="songs one client may have fetched from Spotify on demand per minute",
    )
    rest_fetch_per_hour: int = Field(
        default=600,
        ge=0,
        description="Spotify requests on-demand forecasts may make per hour (per predictor process), the "
        "rest of the app's quota left to the weekly run",
    )
    rest_shared_scoring: bool = Field(
        default=True,
        description="forecast the songs of a request that need an on-demand forecast with one load and one "
        "scoring pass (off: one per anchor week, the plain way)",
    )
    event_attempts: int = Field(default=3, ge=1, description="tries per event when the database conflicts")
    event_retry_seconds: float = Field(default=0.5, ge=0, description="pause before trying again, times n")
    prediction_retention_weeks: int = Field(
        default=60,
        ge=0,
        description="anchor weeks of predictions kept (the newest ones; 0: all): a year of forecasts, so "
        "each 52-week forecast can be checked when it comes due (docs/operations.md)",
    )
    latest_message_max_predictions: int = Field(
        default=20_000,
        ge=0,
        description="predictions carried by the retained predictions/latest message (every song's own topic "
        "carries its prediction regardless): one message of 100,000 songs would be ~40 MB",
    )
    alert_threshold: float | None = Field(
        default=None, description="alert when a 26-week popularity forecast crosses this value"
    )
    alert_move: float | None = Field(
        default=None, description="alert when a forecast moves by more than this since the last one"
    )
