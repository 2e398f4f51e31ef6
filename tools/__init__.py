"""Project tooling that machines run: the house-rule audit and the plugin-code guard."""
