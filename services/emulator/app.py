"""The emulator as an ASGI app: Spotify's token endpoint (`accounts.py`), catalog endpoints behind the
fault-injecting gate (`routes.py`, `gate.py`), errors in Spotify's shape (`errors.py`) and the
`/_emulator` controls (`control.py`)."""

from __future__ import annotations

from fastapi import FastAPI

from services.emulator.accounts import make_accounts_router
from services.emulator.config import EmulatorConfig
from services.emulator.control import make_control_router
from services.emulator.errors import install_error_handlers
from services.emulator.gate import StatusCounter
from services.emulator.routes import make_api_router
from services.emulator.state import EmulatorState


def create_app(config: EmulatorConfig | None = None) -> FastAPI:
    """The emulator as an ASGI app; `app.state.emulator` holds catalog, clock, faults and counters."""
    config = config or EmulatorConfig()
    app = FastAPI(title="Spotify Web API emulator (songpop)", docs_url="/_emulator/docs", openapi_url=None)
    app.state.emulator = EmulatorState(config)
    install_error_handlers(app)
    app.add_middleware(StatusCounter, state=app.state.emulator)
    app.include_router(make_accounts_router())
    app.include_router(make_api_router())
    app.include_router(make_control_router())
    return app
