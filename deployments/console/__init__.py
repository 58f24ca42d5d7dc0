"""The web console: its page (web/), its routes and its live feed."""
