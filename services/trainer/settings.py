"""Trainer settings."""

from pydantic import Field, field_validator

from shared.config import Settings
from shared.schedule import check_cron, check_timezone


class TrainerSettings(Settings):
    train_cron: str = Field(default="0 12 * * 1", description="when to retrain (cron, in train_timezone)")
    train_timezone: str = "Europe/Rome"

    _cron = field_validator("train_cron")(check_cron)
    _timezone = field_validator("train_timezone")(check_timezone)
