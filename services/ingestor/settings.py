"""Ingestor settings."""

from pydantic import Field

from shared.config import Settings


class IngestorSettings(Settings):
    ingest_cron: str = "0 6 * * 1"  # weekly update: Monday 06:00, before the trainer's 12:00
    ingest_timezone: str = "Europe/Rome"
    track_ids: list[str] = Field(default_factory=list, description="extra track ids to follow every week")
    follow_weeks: int = Field(default=60, ge=1, description="weeks a song stays followed after it trended")
    write_chunk: int = Field(default=2000, ge=1)
