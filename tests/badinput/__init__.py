"""The bad-input catalogue: every kind of malformed, hostile or mistaken input and what the library answers."""
