"""The front door: sandbox traffic is told apart from API traffic and streamed to the sandbox."""
