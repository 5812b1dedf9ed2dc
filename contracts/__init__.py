"""OpenMaaS contracts: event envelope and versioned events. Imports nothing of ours."""
from contracts.envelope import Envelope, EventData, new_id, utcnow
from contracts.events import ALL_EVENTS, parse_data

__all__ = ["ALL_EVENTS", "Envelope", "EventData", "new_id", "parse_data", "utcnow"]
