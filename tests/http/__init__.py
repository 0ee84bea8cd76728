"""Tests of app/http: request validation, errors, pagination, conditional requests, OpenAPI, headers."""
