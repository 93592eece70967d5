"""Password hashing with argon2id (argon2-cffi), off the event loop.

Unknown users are checked against a dummy hash made with the same parameters, so a login for a
name that does not exist costs the same time as one with a wrong password.
"""

from __future__ import annotations

from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


@dataclass(frozen=True)
class Argon2Params:
    time_cost: int = 3
    memory_kib: int = 65536
    parallelism: int = 2


class Passwords:
    def __init__(self, params: Argon2Params = Argon2Params()) -> None:
        self.params = params
        self.hasher = PasswordHasher(
            time_cost=params.time_cost, memory_cost=params.memory_kib, parallelism=params.parallelism, type=Type.ID
        )
        self._dummy = self.hasher.hash("bastion-dummy-password-for-unknown-users")

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> tuple[bool, bool]:
        """(matches, needs a rehash with the current parameters)."""
        try:
            self.hasher.verify(stored or self._dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False, False
        if stored is None:
            return False, False
        return True, self.hasher.check_needs_rehash(stored)
