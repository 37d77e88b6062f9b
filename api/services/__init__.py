"""Business logic of the API: route handlers parse, call these, and map errors."""
