"""The web console: a single-page app (Preact + htm, vendored, no build step) over the REST API."""
