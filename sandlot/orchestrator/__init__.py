"""Sandbox lifecycle: ties the store (what should exist) to the runtime (what does exist)."""
