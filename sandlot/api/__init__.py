"""The E2B-compatible control plane (REST, JSON, camelCase)."""
