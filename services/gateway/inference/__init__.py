"""Model calls: the OpenAI-compatible API, the chat gateway (routing, relay), the playground, moderation."""
