"""The Spotify Web API client (async, httpx + tenacity) and the typed objects it returns."""
