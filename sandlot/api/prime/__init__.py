"""Prime Intellect façade: ``/api/v1`` control plane and the exec/file gateway, over the same engine."""
