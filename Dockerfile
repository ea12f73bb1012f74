# One image for every songpop service; compose picks the command (`songpop serve <service>`).
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# Dependencies first, at the locked versions: this layer is rebuilt only when the lock file changes.
# /app/var/models exists (owned by songpop) so that a new named volume mounted there starts writable.
COPY requirements.lock ./
RUN pip install -r requirements.lock && useradd --create-home --uid 10001 songpop \
    && mkdir -p /app/var/models /app/charts && chown -R songpop /app/var /app/charts

COPY pyproject.toml README.md LICENSE ./
COPY shared ./shared
COPY services ./services
RUN pip install --no-deps .
USER songpop

ENTRYPOINT ["songpop"]
CMD ["--help"]
