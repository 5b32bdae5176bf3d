"""Example user-declared search spaces (YAML), installed as ``qdarts.configs.spaces``."""
