"""Observe: the append-only audit trail (who sent what, what went where, who looked) and the
Prometheus metrics every stage reports into.
"""
