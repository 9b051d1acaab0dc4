"""Routing: each expert decides by its first generated token, newest first; the fallback answers the rest."""
