"""Dependency aliases: routes take these and never build clients themselves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from shared.spotify.client import SpotifyClient
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from .settings import PredictorSettings


def get_settings(request: Request) -> PredictorSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    return request.app.state.sessions  # type: ignore[no-any-return]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


def get_spotify(request: Request) -> SpotifyClient:
    return request.app.state.spotify  # type: ignore[no-any-return]


SettingsDep = Annotated[PredictorSettings, Depends(get_settings)]
SessionsDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessions)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
SpotifyDep = Annotated[SpotifyClient, Depends(get_spotify)]
