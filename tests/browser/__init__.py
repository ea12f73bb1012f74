"""Real-browser tests of the dashboard (Debian chromium driven by Playwright)."""
