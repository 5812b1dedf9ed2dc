"""API keys of the OpenAI-compatible API (guide 11): their CRUD, authenticating a call, per-key limits."""
