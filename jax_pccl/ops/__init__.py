"""Collective operations, one per module (primitive, lowering, rules)."""
