"""A pharmacy loyalty-programme API written the way small teams write them: FastAPI, raw sqlite3,
a generic "update my profile" that copies whatever the client sends onto the row, a password
reset by short code, invite codes worth points. Its bugs are the classes a public vulnerable app
(Damn Vulnerable RESTaurant, docs/scanner-eval.md) showed the scanner missing; none of its code
or names come from there. Never run it anywhere but 127.0.0.1.

TRUTH (written before the scanner was run on it; `tests/integration/scanner/test_real_targets.py`
scores every finding against this table — (check, path template)):

  api2-weak-secret        ""                  HS256 secret = 6 random digits when JWT_SECRET is unset
  api3-mass-assignment    /me                 PATCH /me declares display_name and phone, but every body
                                              field that names a column is written: {"role": "manager"}
  api2-enumeration        /auth/forgot        404 "no account with this e-mail" vs 200 "code sent"
  api2-code-bruteforce    /auth/reset         4-digit code, 30-minute validity, unlimited attempts
  api6-flow-replay        /loyalty/redeem     an invite code earns points every time it is redeemed,
                                              by anyone, its owner included
  api9-undocumented       /branch/prescriptions   the branch terminals' feed of every prescription,
                                              left out of the spec and without authentication
                                              (beside the documented, secured /prescriptions)
  api8-cors               *                   allow_origin_regex "https://(www|app).corner-pharmacy.com" with
                                              credentials: the dots are not escaped, so
                                              https://wwwxcorner-pharmacy.com is trusted (found when
                                              the scan is told the two real origins, ORIGINS)
  api8-headers            *                   no security headers
  api4-no-rate-limit      *                   only logins are throttled
  api4-body-size          *                   no body limit

NOT vulnerable (a finding here is a false positive): logins are throttled per user name (5
failures → 429) and answer the same for unknown users and wrong passwords; tokens carry exp;
/products is public by spec; /me shows only the caller; a made-up invite code is refused (200
with `points_added: 0`, the lenient answer such APIs give); the role column only takes
member/pharmacist/manager (anything else, "admin" included, is a 500 from the CHECK constraint, as
an ORM enum's is: a probe that only ever sends "admin" learns nothing).

`create_app(hardened=True)` is the same API with those bugs fixed in code: a random 32-byte
secret, PATCH /me writes only its declared fields, /auth/forgot answers the same for everyone,
a reset code dies after 5 wrong guesses (429), an invite redeems once per account and never by
its owner (409 / 400), the branch feed is gone, and the origin regex is escaped.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import sqlite3
import string
import threading
import time
from typing import Any

import jwt
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.middleware.cors import CORSMiddleware
from pydantic import BaseModel, ConfigDict

PASSWORDS = {"carol": "carol-Loyal-1", "dave": "dave-Loyal-2"}
SCAN_LOGINS = [
    {"name": n, "username": n, "path": "/auth/login", "json": {"username": n, "password": p}, "token": "access_token"}
    for n, p in PASSWORDS.items()
]
ORIGINS = ["https://www.corner-pharmacy.com", "https://app.corner-pharmacy.com"]  # its two front-ends
COLUMNS = {"username", "email", "role", "display_name", "phone", "points"}


def _hash(pw: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(8)
    return salt.hex() + "$" + hashlib.pbkdf2_hmac("sha256", pw.encode(), salt, 1000).hex()


def _check(pw: str, stored: str) -> bool:
    salt, _ = stored.split("$")
    return secrets.compare_digest(_hash(pw, bytes.fromhex(salt)), stored)


class Register(BaseModel):
    username: str
    email: str
    password: str


class Login(BaseModel):
    username: str
    password: str


class MeUpdate(BaseModel):
    model_config = ConfigDict(extra="allow")  # "so the mobile app can send new fields without a deploy"
    display_name: str | None = None
    phone: str | None = None


class MeUpdateStrict(BaseModel):
    display_name: str | None = None
    phone: str | None = None


class Forgot(BaseModel):
    email: str


class Reset(BaseModel):
    email: str
    code: str
    new_password: str


class Redeem(BaseModel):
    invite_code: str


class Prescription(BaseModel):
    id: int
    patient: str
    medicine: str
    pharmacy_branch: str


def create_app(hardened: bool = False) -> FastAPI:
    secret = secrets.token_urlsafe(32) if hardened else "".join(random.choices(string.digits, k=6))
    db = sqlite3.connect(":memory:", check_same_thread=False)
    db.row_factory = sqlite3.Row
    lock = threading.Lock()
    db.executescript(
        """
        CREATE TABLE users (id INTEGER PRIMARY KEY, username TEXT UNIQUE, email TEXT UNIQUE, pw TEXT,
          role TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('member', 'pharmacist', 'manager')),
          display_name TEXT, phone TEXT, points INTEGER NOT NULL DEFAULT 0, invite_code TEXT UNIQUE,
          reset_code TEXT, reset_until REAL, reset_fails INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE redemptions (user_id INTEGER, code TEXT, UNIQUE (user_id, code));
        CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT, price REAL);
        CREATE TABLE prescriptions (id INTEGER PRIMARY KEY, user_id INTEGER, patient TEXT, medicine TEXT,
          pharmacy_branch TEXT);
        INSERT INTO products (name, price) VALUES ('Vitamin D 1000 IU', 6.5), ('Sunscreen SPF 50', 12.9);
        """
    )
    for name, pw in PASSWORDS.items():
        db.execute("INSERT INTO users (username, email, pw) VALUES (?, ?, ?)", (name, f"{name}@pharma.test", _hash(pw)))
    db.execute(
        "INSERT INTO prescriptions (user_id, patient, medicine, pharmacy_branch) VALUES "
        "(1, 'Carol N.', 'Amoxicillin 500 mg', 'Elm Street'), (2, 'Dave P.', 'Sertraline 50 mg', 'Harbour')"
    )
    login_fails: dict[str, list[float]] = {}

    app = FastAPI(title="Corner Pharmacy loyalty API", version="2.3.0")
    app.add_middleware(
        CORSMiddleware,
        allow_origin_regex=r"https://(www|app)\.corner-pharmacy\.com"
        if hardened
        else "https://(www|app).corner-pharmacy.com",
        allow_credentials=True,
        allow_methods=["GET", "POST", "PATCH"],
        allow_headers=["Authorization", "Content-Type"],
    )

    def q(sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with lock:
            rows = db.execute(sql, args).fetchall()
            db.commit()
            return rows

    def current(authorization: str = Header("")) -> sqlite3.Row:
        try:
            claims = jwt.decode(authorization.removeprefix("Bearer "), secret, algorithms=["HS256"])
        except jwt.PyJWTError:
            raise HTTPException(401, "not authenticated") from None
        rows = q("SELECT * FROM users WHERE id = ?", (int(claims["sub"]),))
        if not rows:
            raise HTTPException(401, "not authenticated")
        return rows[0]

    def me_view(u: sqlite3.Row) -> dict[str, Any]:
        return {k: u[k] for k in ("id", "username", "email", "role", "display_name", "phone", "points")}

    @app.post("/auth/register", status_code=201)
    def register(body: Register) -> dict[str, Any]:
        try:
            q(
                "INSERT INTO users (username, email, pw) VALUES (?, ?, ?)",
                (body.username, body.email, _hash(body.password)),
            )
        except sqlite3.IntegrityError:
            raise HTTPException(409, "username or e-mail taken") from None
        return me_view(q("SELECT * FROM users WHERE username = ?", (body.username,))[0])

    @app.post("/auth/login")
    def login(body: Login) -> dict[str, Any]:
        now = time.monotonic()
        fails = [t for t in login_fails.get(body.username, []) if now - t < 60]
        if len(fails) >= 5:
            raise HTTPException(429, "too many attempts")
        rows = q("SELECT * FROM users WHERE username = ?", (body.username,))
        if not rows or not _check(body.password, rows[0]["pw"]):
            login_fails[body.username] = [*fails, now]
            raise HTTPException(401, "invalid credentials")
        token = jwt.encode({"sub": str(rows[0]["id"]), "exp": int(time.time()) + 900}, secret, algorithm="HS256")
        return {"access_token": token, "token_type": "bearer"}

    @app.get("/products", openapi_extra={"security": []})
    def products() -> list[dict[str, Any]]:
        return [dict(r) for r in q("SELECT * FROM products")]

    @app.get("/prescriptions", response_model=list[Prescription])
    def my_prescriptions(u: sqlite3.Row = Depends(current)) -> list[dict[str, Any]]:
        return [dict(r) for r in q("SELECT * FROM prescriptions WHERE user_id = ?", (u["id"],))]

    if not hardened:

        @app.get("/branch/prescriptions", include_in_schema=False)  # for the branch terminals' nightly sync
        def branch_feed() -> list[dict[str, Any]]:
            return [dict(r) for r in q("SELECT * FROM prescriptions")]

    @app.get("/me")
    def me(u: sqlite3.Row = Depends(current)) -> dict[str, Any]:
        return me_view(u)

    if hardened:

        @app.patch("/me")
        def update_me_strict(body: MeUpdateStrict, u: sqlite3.Row = Depends(current)) -> dict[str, Any]:
            for k, v in body.model_dump(exclude_unset=True).items():
                q(f"UPDATE users SET {k} = ? WHERE id = ?", (v, u["id"]))  # k is a declared field
            return me_view(q("SELECT * FROM users WHERE id = ?", (u["id"],))[0])
    else:

        @app.patch("/me")
        def update_me(body: MeUpdate, u: sqlite3.Row = Depends(current)) -> dict[str, Any]:
            for k, v in body.model_dump(exclude_unset=True).items():
                if k in COLUMNS:  # "only real columns" — the role is one
                    q(f"UPDATE users SET {k} = ? WHERE id = ?", (v, u["id"]))
            return me_view(q("SELECT * FROM users WHERE id = ?", (u["id"],))[0])

    @app.post("/auth/forgot")
    def forgot(body: Forgot) -> dict[str, str]:
        rows = q("SELECT * FROM users WHERE email = ?", (body.email,))
        if not rows:
            if hardened:
                return {"detail": "If the address is registered, a code was sent"}
            raise HTTPException(404, "no account with this e-mail")
        code = "".join(secrets.choice(string.digits) for _ in range(4))
        q(
            "UPDATE users SET reset_code = ?, reset_until = ?, reset_fails = 0 WHERE id = ?",
            (code, time.time() + 1800, rows[0]["id"]),
        )
        return {"detail": "If the address is registered, a code was sent" if hardened else "code sent"}

    @app.post("/auth/reset")
    def reset(body: Reset) -> dict[str, str]:
        rows = q("SELECT * FROM users WHERE email = ?", (body.email,))
        u = rows[0] if rows else None
        if hardened and u is not None and u["reset_fails"] >= 5:
            raise HTTPException(429, "too many attempts: request a new code")
        if u is None or not u["reset_code"] or time.time() > u["reset_until"] or body.code != u["reset_code"]:
            if u is not None:
                q("UPDATE users SET reset_fails = reset_fails + 1 WHERE id = ?", (u["id"],))
            raise HTTPException(400, "invalid or expired code")
        q("UPDATE users SET pw = ?, reset_code = NULL WHERE id = ?", (_hash(body.new_password), u["id"]))
        return {"detail": "password changed"}

    @app.get("/loyalty/invite")
    def invite(u: sqlite3.Row = Depends(current)) -> dict[str, Any]:
        code = u["invite_code"]
        if code is None:
            code = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(8))
            q("UPDATE users SET invite_code = ? WHERE id = ?", (code, u["id"]))
        return {"invite_code": code, "reward_points": 500}

    @app.post("/loyalty/redeem")
    def redeem(body: Redeem, u: sqlite3.Row = Depends(current)) -> dict[str, Any]:
        owner = q("SELECT * FROM users WHERE invite_code = ?", (body.invite_code,))
        if not owner:
            return {"status": "no such code", "points_added": 0}
        if hardened:
            if owner[0]["id"] == u["id"]:
                raise HTTPException(400, "you cannot redeem your own invite")
            try:
                q("INSERT INTO redemptions (user_id, code) VALUES (?, ?)", (u["id"], body.invite_code))
            except sqlite3.IntegrityError:
                raise HTTPException(409, "this invite was already redeemed by you") from None
        q("UPDATE users SET points = points + 500 WHERE id = ?", (u["id"],))
        return {"status": "ok", "points_added": 500}

    return app
