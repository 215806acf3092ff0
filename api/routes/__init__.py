"""The HTTP endpoints, one blueprint per resource: search, admin, ops."""
