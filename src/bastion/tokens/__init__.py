"""The token service: users and passwords, signing keys and JWKS, access/refresh tokens with
rotation and reuse detection, API keys, and an OAuth 2.0 authorization server (Authlib)."""
