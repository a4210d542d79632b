"""Sandlot: self-hosted sandboxes for AI agents that speak the E2B API."""
