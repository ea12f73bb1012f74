"""The predictor: forecasts for the trending songs on `db-updated`, and a REST API for any song."""
