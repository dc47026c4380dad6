"""File: every received instance made durable (Part-10 file fsynced, row committed) before it
is acknowledged. ``storage`` owns the files on disk, ``ingest`` the one path C-STORE, STOW-RS and
the node's own outputs take into storage and the database.
"""
