class AuthError(Exception):
    """A credential was presented and refused. `reason` is safe to show (never echoes secrets)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
