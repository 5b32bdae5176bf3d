"""Built-in hardware targets (YAML data sheets with cited numbers)."""
