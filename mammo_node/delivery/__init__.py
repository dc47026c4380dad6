"""Deliver: results back into PACS. ``destinations`` (where results go), ``outbox`` (the durable
queue of (output, destination) deliveries), ``exporter`` (the loop that sends them, with
backoff and dead letters), ``scu`` (the C-STORE / C-ECHO client).
"""
