"""Runnable configs; installed as ``qdarts.configs`` so `qdarts search` finds them anywhere."""
