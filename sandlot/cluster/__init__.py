"""Scale-out: the ``sandlot api`` tier that routes to ``sandlot node`` agents (docs/scale-out.md)."""
