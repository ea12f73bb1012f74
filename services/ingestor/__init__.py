"""The ingestor: Spotify and chart files → MySQL snapshots → `db-updated`."""
