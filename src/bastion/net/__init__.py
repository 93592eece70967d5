"""Shared network infrastructure that knows neither the gateway nor any policy: the pooled
HTTP/1.1 client (`http1`, used for proxying and for the gateway's own requests), small
requests on it (`fetch`: JWKS, introspection, OIDC), and Redis clients from URLs (`redis`)."""
