"""Build src/bastion/scanner/data/jwt-secrets.txt.gz: the candidate list `bastion scan` tries
offline against HS256/384/512 tokens (check api2-weak-secret).

It is generated, not copied: from public facts about how weak signing secrets come about —
  1. secrets printed in framework docs, library READMEs and tutorials that get pasted into real
     apps (jwt.io's debugger default, the FastAPI security tutorial's SECRET_KEY, the express
     "keyboard cat" / "shhhhh" examples, Spring Boot tutorial hex keys, …);
  2. phrase secrets developers type: {my,your,super,app,api,jwt,…} × {secret,key,…} with -, _ or
     nothing between, lower and Capitalised;
  3. the base words that top every published password-frequency study (password, qwerty, dragon,
     sunshine, …) with the suffixes those studies report (digits, years, !, 123);
  4. every plain lower-case word of a system dictionary (Debian `wamerican`,
     /usr/share/dict/american-english) read at build time, alone and with a year suffix for the
     short common-looking ones.
Run: python scripts/build_jwt_wordlist.py [/usr/share/dict/american-english]
"""

from __future__ import annotations

import gzip
import itertools
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src/bastion/scanner/data/jwt-secrets.txt.gz"

DEFAULTS = [
    "your-256-bit-secret",
    "your-384-bit-secret",
    "your-512-bit-secret",  # jwt.io debugger
    "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7",  # FastAPI OAuth2/JWT tutorial
    "keyboard cat",
    "shhhhh",
    "shhhhhared-secret",
    "secret",
    "s3cr3t",
    "supersecret",
    "changeme",
    "changeit",
    "404E635266556A586E3272357538782F413F4428472B4B6250645367566B5970",  # Spring Boot JWT tutorials
    "5367566B59703373367639792F423F4528482B4D6251655468576D5A71347437",
    "mySecretKey",
    "mysecretkey",
    "my_secret_key",
    "my-secret-key",
    "ThisIsMySecretKey",
    "thisismysecretkey",
    "your-secret-key",
    "your_secret_key",
    "your_jwt_secret",
    "your-jwt-secret",
    "jwt_secret",
    "jwt-secret",
    "JWT_SECRET",
    "SECRET_KEY",
    "secret_key",
    "secretkey",
    "secret-key",
    "super-secret-key",
    "super_secret_key",
    "topsecret",
    "top-secret",
    "default",
    "development",
    "dev",
    "test",
    "testing",
    "staging",
    "production",
    "hmac-secret",
    "token-secret",
    "app-secret",
    "api-secret",
    "session-secret",
    "cookie-secret",
    "gsdfgsdfgdfg",
    "notasecret",
    "insecure",
    "please-change-me",
    "CHANGE_ME",
    "change-me",
    "change_me",
    "replace-me",
    "xxxxxxxx",
    "1234567890",
    "0123456789",
    "abcdefghijklmnopqrstuvwxyz",
    "qwertyuiop",
    "your_super_secret",
    "a-string-secret-at-least-256-bits-long",
    "secretOrPrivateKey",
    "privateKey",
    "private-key",
    "public-key",
    "key",
    "jwt",
    "token",
    "hmac",
    "hs256",
    "HS256",
    "access",
    "refresh",
    "accesstoken",
    "refreshtoken",
    "access_token_secret",
    "refresh_token_secret",
    "ACCESS_TOKEN_SECRET",
    "REFRESH_TOKEN_SECRET",
    "TOKEN_SECRET",
    "APP_SECRET",
    "AUTH_SECRET",
    "NEXTAUTH_SECRET",
    "JWT_KEY",
    "random_secret_key",
    "random-secret-key",
    "some-secret",
    "somesecret",
    "mysecret",
    "my-secret",
    "secret123",
    "Secret123",
    "secret1234",
    "password",
    "Password1",
    "P@ssw0rd",
    "admin",
    "root",
]
PREFIXES = [
    "",
    "my",
    "your",
    "super",
    "app",
    "api",
    "jwt",
    "token",
    "auth",
    "access",
    "refresh",
    "session",
    "dev",
    "prod",
    "test",
    "local",
    "private",
    "signing",
    "hmac",
    "secure",
    "server",
    "backend",
    "node",
    "express",
    "flask",
    "django",
    "spring",
    "laravel",
    "rails",
    "nest",
    "next",
    "fastapi",
    "default",
    "very",
    "top",
    "long",
    "random",
    "strong",
    "master",
    "site",
    "web",
    "user",
    "admin",
    "company",
    "project",
]
HEADS = [
    "secret",
    "key",
    "secretkey",
    "secret-key",
    "secret_key",
    "jwt",
    "jwtsecret",
    "jwtkey",
    "token",
    "tokensecret",
    "signingkey",
    "password",
    "pass",
    "salt",
    "hmac",
]
# the base words of public password-frequency studies and the suffixes they report
BASES = [
    "password",
    "passw0rd",
    "p@ssw0rd",
    "qwerty",
    "qwertyuiop",
    "asdfgh",
    "zxcvbn",
    "abc",
    "abcd",
    "letmein",
    "welcome",
    "admin",
    "administrator",
    "root",
    "login",
    "master",
    "dragon",
    "sunshine",
    "monkey",
    "football",
    "baseball",
    "soccer",
    "hockey",
    "iloveyou",
    "princess",
    "shadow",
    "superman",
    "batman",
    "trustno1",
    "michael",
    "jordan",
    "charlie",
    "freedom",
    "whatever",
    "starwars",
    "pokemon",
    "hello",
    "hunter",
    "ninja",
    "mustang",
    "access",
    "flower",
    "cookie",
    "secret",
    "changeme",
    "test",
    "guest",
    "default",
    "summer",
    "winter",
    "spring",
    "autumn",
    "love",
    "killer",
    "pepper",
    "ginger",
    "tigger",
    "buster",
    "jessica",
    "daniel",
    "thomas",
    "robert",
    "jennifer",
    "ashley",
    "andrew",
    "joshua",
    "matrix",
    "computer",
    "internet",
    "server",
    "coffee",
    "chocolate",
    "banana",
    "orange",
    "purple",
    "silver",
    "golden",
    "diamond",
    "maverick",
    "phoenix",
    "falcon",
    "tiger",
    "lion",
    "eagle",
    "wolf",
    "bear",
    "apple",
    "google",
    "github",
    "docker",
    "linux",
    "ubuntu",
    "python",
    "java",
    "node",
    "react",
    "angular",
    "django",
    "flask",
    "spring",
]
SUFFIXES = [
    "",
    "1",
    "12",
    "123",
    "1234",
    "12345",
    "123456",
    "!",
    "1!",
    "123!",
    "@123",
    "#1",
    "01",
    "007",
    "69",
    "99",
    "00",
    "11",
    "13",
    "21",
    "22",
    "23",
    "24",
    "42",
    "777",
    "2k",
    *[str(y) for y in range(1990, 2027)],
    *[f"{y}!" for y in range(2015, 2027)],
]
LEET = str.maketrans({"a": "@", "e": "3", "i": "1", "o": "0", "s": "$"})


def build(dict_path: str) -> list[str]:
    words: list[str] = list(DEFAULTS)
    for pre, head in itertools.product(PREFIXES, HEADS):
        for sep in ("", "-", "_"):
            w = f"{pre}{sep}{head}" if pre else head
            words += [w, w.capitalize(), w.upper()]
            if not pre:
                break
    for base in BASES:
        for suffix in SUFFIXES:
            for form in {base, base.capitalize(), base.translate(LEET)}:
                words.append(form + suffix)
    dict_words = []
    for line in Path(dict_path).read_text(encoding="utf-8", errors="ignore").splitlines():
        w = line.strip()
        if re.fullmatch(r"[a-z]{3,14}", w):
            dict_words.append(w)
    words += dict_words
    for w in dict_words:
        if 4 <= len(w) <= 8:  # a word and a year: the commonest shape of a "strong" typed secret
            words += [w + str(y) for y in (2020, 2021, 2022, 2023, 2024, 2025)] + [w + "123", w + "1"]
    return list(dict.fromkeys(w for w in words if w))


def main() -> None:
    words = build(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/dict/american-english")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(OUT, "wb", mtime=0, compresslevel=9) as f:
        f.write(("\n".join(words) + "\n").encode())
    print(f"{len(words)} candidates → {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
