"""The token service's own OpenAPI document (served at {prefix}/openapi.json; schemathesis
tests the service against it)."""

from __future__ import annotations

from typing import Any

from bastion.tokens.config import TokenServiceConfig

PROBLEM = {
    "description": "problem",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
TOKENS = {"description": "tokens", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Tokens"}}}}


def _json(ref: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def document(config: TokenServiceConfig) -> dict[str, Any]:
    p = config.prefix
    errors = {
        "400": PROBLEM,
        "401": PROBLEM,
        "409": PROBLEM,
        "413": PROBLEM,
        "415": PROBLEM,
        "422": PROBLEM,
        "429": PROBLEM,
    }
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    paths: dict[str, Any] = {
        f"{p}/login": {"post": {"security": [], "requestBody": _json("Login"), "responses": {"200": TOKENS, **errors}}},
        f"{p}/refresh": {
            "post": {"security": [], "requestBody": _json("Refresh"), "responses": {"200": TOKENS, **errors}}
        },
        f"{p}/logout": {
            "post": {
                "security": bearer,
                "requestBody": {**_json("Logout"), "required": False},
                "responses": {"204": {"description": "logged out"}, **errors},
            }
        },
        f"{p}/logout-all": {
            "post": {"security": bearer, "responses": {"204": {"description": "every session ended"}, **errors}}
        },
        f"{p}/userinfo": {
            "get": {
                "security": bearer,
                "responses": {
                    "200": {
                        "description": "the user",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/UserInfo"}}},
                    },
                    **errors,
                },
            }
        },
        f"{p}/.well-known/jwks.json": {"get": {"security": [], "responses": {"200": {"description": "JWKS"}}}},
        f"{p}/.well-known/openid-configuration": {
            "get": {"security": [], "responses": {"200": {"description": "discovery"}}}
        },
    }
    if config.registration:
        paths[f"{p}/register"] = {
            "post": {
                "security": [],
                "requestBody": _json("Register"),
                "responses": {
                    "201": {
                        "description": "registered",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/User"}}},
                    },
                    **errors,
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "bastion token service", "version": "1"},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "Register": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["username", "email", "password"],
                    "properties": {
                        "username": {"type": "string", "pattern": "^[A-Za-z0-9_]{3,30}$"},
                        "email": {"type": "string", "format": "email", "maxLength": 254},
                        "password": {"type": "string", "minLength": 12, "maxLength": 128},
                    },
                },
                "Login": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["username", "password"],
                    "properties": {
                        "username": {"type": "string", "maxLength": 320},
                        "password": {"type": "string", "maxLength": 256},
                        "scope": {"type": "string", "maxLength": 1024},
                    },
                },
                "Refresh": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["refresh_token"],
                    "properties": {"refresh_token": {"type": "string", "maxLength": 4096}},
                },
                "Logout": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"refresh_token": {"type": "string", "maxLength": 4096}},
                },
                "Tokens": {
                    "type": "object",
                    "required": ["access_token", "token_type", "expires_in"],
                    "properties": {
                        "access_token": {"type": "string"},
                        "token_type": {"const": "Bearer"},
                        "expires_in": {"type": "integer"},
                        "refresh_token": {"type": "string"},
                        "scope": {"type": "string"},
                    },
                },
                "User": {
                    "type": "object",
                    "required": ["id", "username", "email", "role"],
                    "properties": {
                        "id": {"type": "string"},
                        "username": {"type": "string"},
                        "email": {"type": "string"},
                        "role": {"type": "string"},
                    },
                },
                "UserInfo": {
                    "type": "object",
                    "properties": {
                        "sub": {"type": "string"},
                        "preferred_username": {"type": "string"},
                        "email": {"type": "string"},
                        "role": {"type": "string"},
                    },
                },
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                    },
                },
            },
        },
    }
