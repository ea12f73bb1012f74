"""Trainer settings."""

from pydantic import Field

from shared.config import Settings


class TrainerSettings(Settings):
    train_cron: str = Field(default="0 12 * * 1", description="when to retrain (cron, in train_timezone)")
    train_timezone: str = "Europe/Rome"
