"""Group: instances into 4-view exams. ``rules`` is pure (which slot an image fills, which image
is scored, why others are not); ``service`` is the background loop that applies the rules to the
database, checks pixels and moves exams from RECEIVING to READY / PARTIAL.
"""
