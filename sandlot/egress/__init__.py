"""The egress proxy: E2B's ``network.rules`` (header injection from team secrets) and
``egressProxy`` (SOCKS5 chaining), in the data path of the sandboxes that ask for them.

``config`` validates the wire shapes, ``ca`` keeps the per-server CA, ``identity`` the key
that signs workload identity tokens (``iam``), ``destinations`` decides
where a proxied connection may go, ``socks`` dials through an upstream proxy and ``server``
is the proxy itself (docs/security.md, "The egress proxy").
"""
