"""envd: the in-sandbox agent (E2B envd-compatible) serving Connect RPC and /files on port 49983.

Self-contained: imports nothing from sandlot outside ``sandlot.envd`` and ``sandlot.protocol`` (the
wire contract it shares with the host), so the two can be shipped alone in the sandbox's read-only
runtime.
"""
