"""The dashboard: trending songs with their forecasts, updated live from the predictions topic."""
