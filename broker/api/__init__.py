"""The REST API under /api/v1: routing with its OpenAPI description, auth, errors."""
