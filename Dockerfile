# One image for every songpop service; compose picks the command (`songpop serve <service>`).
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md LICENSE ./
COPY shared ./shared
COPY services ./services
# /app/var/models exists (owned by songpop) so that a new named volume mounted there starts writable.
RUN pip install . && useradd --create-home --uid 10001 songpop && mkdir -p /app/var/models /app/charts \
    && chown -R songpop /app/var /app/charts
USER songpop

ENTRYPOINT ["songpop"]
CMD ["--help"]
