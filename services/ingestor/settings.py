"""Ingestor settings."""

from pydantic import Field, field_validator

from shared.config import Settings
from shared.ids import normalise_track_id
from shared.schedule import check_cron, check_timezone


class IngestorSettings(Settings):
    ingest_cron: str = "0 6 * * 1"  # weekly update: Monday 06:00, before the trainer's 12:00
    ingest_timezone: str = "Europe/Rome"
    track_ids: list[str] = Field(default_factory=list, description="extra track ids to follow every week")
    follow_weeks: int = Field(default=60, ge=1, description="weeks a song stays followed after it trended")

    _cron = field_validator("ingest_cron")(check_cron)
    _timezone = field_validator("ingest_timezone")(check_timezone)

    @field_validator("track_ids")
    @classmethod
    def _spotify_ids(cls, ids: list[str]) -> list[str]:
        """Ids, URIs or open.spotify.com URLs, stored as plain ids; anything else is a config error."""
        return [normalise_track_id(raw) for raw in ids]
