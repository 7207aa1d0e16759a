"""Staff authentication: password hashing, API tokens and their scopes."""
