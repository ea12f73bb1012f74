"""Dependency aliases: routes take these and never build clients themselves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.spotify.client import SpotifyClient

from .cache import ResidentAnswers, ResponseCache
from .guard import ClientAllowance
from .settings import PredictorSettings

# Plain accessors are `async def`: FastAPI would run a sync dependency in a worker thread per request.


async def get_settings(request: Request) -> PredictorSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    return request.app.state.sessions  # type: ignore[no-any-return]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


async def get_spotify(request: Request) -> SpotifyClient:
    return request.app.state.spotify  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Clients:
    """Everything the forecast routes use, built once in the lifespan: one dependency to resolve
    instead of four (dependency resolution is most of a cached answer's cost)."""

    settings: PredictorSettings
    sessions: async_sessionmaker[AsyncSession]
    reader: AsyncEngine  # REST reads (services.predictor.tracks.make_reader)
    spotify: SpotifyClient
    cache: ResponseCache  # answers of songs forecast on demand
    resident: ResidentAnswers  # answers of every song with an up-to-date batch forecast
    # songs each client may have fetched from Spotify on demand
    allowance: ClientAllowance = field(default_factory=ClientAllowance)


async def get_clients(request: Request) -> Clients:
    return request.app.state.clients  # type: ignore[no-any-return]


SettingsDep = Annotated[PredictorSettings, Depends(get_settings)]
SessionsDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessions)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
SpotifyDep = Annotated[SpotifyClient, Depends(get_spotify)]
ClientsDep = Annotated[Clients, Depends(get_clients)]
