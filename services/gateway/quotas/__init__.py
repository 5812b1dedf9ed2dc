"""Free quota of the preset services (guide 9), QPS limits, and usage metering and monitoring."""
