"""The OCI Distribution API (`/v2/…`): one module per resource, one registry of errors."""
