"""A deliberately vulnerable GraphQL upstream on graphql-core, for the WAF's API-input tests.

Its resolvers really do what makes injection dangerous: `pastes`/`paste` build SQL by string
concatenation over an sqlite database, `systemDiagnostics` runs a shell command, `importPaste`
fetches a URL over HTTP, `pasteFile` reads a file by a name the client gives. With the WAF off the
attack table's payloads work against it (the tests check that too), so a refusal means the WAF
stopped a real attack.

The schema also carries the shapes of public GraphQL APIs (a code host with repositories and
issues, a shop with products and orders, a space-launch booking example, countries) so the
realistic operation set executes; fields without a resolver get plausible generated values.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from graphql import (
    GraphQLEnumType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLUnionType,
    build_schema,
    default_field_resolver,
    graphql,
)

SDL = """
scalar DateTime
scalar URI
scalar JSON

interface Node { id: ID! }
union SearchResultItem = Repository | Issue | User

enum IssueState { OPEN CLOSED }
enum OrderDirection { ASC DESC }
enum IssueOrderField { CREATED_AT UPDATED_AT COMMENTS }
enum SearchType { REPOSITORY ISSUE USER }
enum Visibility { PUBLIC PRIVATE }
enum PatientSize { SMALL LARGE }

input IssueOrder { field: IssueOrderField!, direction: OrderDirection! }
input PasteFilter { title: String, contentContains: String, public: Boolean, burn: Boolean }
input CreateIssueInput { repositoryId: ID!, title: String!, body: String, labelIds: [ID!] }
input ProductInput { title: String!, descriptionHtml: String, vendor: String, productType: String, tags: [String!],
  variants: [VariantInput!], handle: String, seo: SeoInput }
input VariantInput { price: String!, sku: String, option1: String, inventoryQuantity: Int }
input SeoInput { title: String, description: String }
input AddressInput { address1: String, city: String, province: String, zip: String, country: String, phone: String }
input CustomerInput { email: String, firstName: String, lastName: String, addresses: [AddressInput!], note: String }
input StringFilter { eq: String, in: [String!], regex: String }
input CountryFilter { code: StringFilter, continent: StringFilter, currency: StringFilter }

type Query {
  pastes(public: Boolean, limit: Int, filter: String): [Paste!]!
  paste(id: ID!, title: String): Paste
  searchPastes(filter: PasteFilter, first: Int, after: String): [Paste!]!
  pasteFile(name: String!): String
  systemHealth: String
  systemDiagnostics(username: String, password: String, cmd: String): String
  users(first: Int, after: String, role: String): [User!]!
  user(id: ID, login: String): User
  viewer: User!
  me: User
  node(id: ID!): Node
  nodes(ids: [ID!]!): [Node]!
  repository(owner: String!, name: String!): Repository
  search(query: String!, type: SearchType!, first: Int, after: String): SearchConnection!
  rateLimit: RateLimit
  products(first: Int, after: String, query: String, sortKey: String, reverse: Boolean): [Product!]!
  product(id: ID, handle: String): Product
  orders(first: Int, query: String): [Order!]!
  shop: Shop!
  launches(pageSize: Int, after: String): LaunchConnection!
  launch(id: ID!): Launch
  countries(filter: CountryFilter): [Country!]!
  country(code: ID!): Country
}

type Mutation {
  createPaste(title: String, content: String, public: Boolean, burn: Boolean): CreatePaste
  editPaste(id: ID!, title: String, content: String): Paste
  deletePaste(id: ID!): Boolean
  uploadPaste(filename: String!, content: String!): String
  importPaste(host: String!, port: Int, path: String!, scheme: String): String
  login(username: String, password: String, email: String): AuthPayload
  createUser(userData: UserInput!): User
  createIssue(input: CreateIssueInput!): Issue
  addComment(subjectId: ID!, body: String!): Comment
  addStar(starrableId: ID!): Repository
  productCreate(input: ProductInput!): Product
  customerCreate(input: CustomerInput!): Customer
  bookTrips(launchIds: [ID]!): TripUpdateResponse!
  cancelTrip(launchId: ID!): TripUpdateResponse!
}

input UserInput { username: String!, email: String!, password: String! }

type Paste { id: ID! title: String content: String public: Boolean burn: Boolean owner: User ipAddr: String
  userAgent: String createdAt: DateTime }
type CreatePaste { paste: Paste }
type AuthPayload { accessToken: String refreshToken: String user: User }
type User implements Node { id: ID! login: String name: String email: String bio: String avatarUrl(size: Int): URI
  createdAt: DateTime pastes(first: Int): [Paste!]! repositories(first: Int, orderBy: String): [Repository!]!
  trips: [Launch!]! }
type Repository implements Node { id: ID! name: String! nameWithOwner: String description: String url: URI
  stargazerCount: Int isPrivate: Boolean visibility: Visibility owner: User
  issues(first: Int, last: Int, after: String, states: [IssueState!], labels: [String!], orderBy: IssueOrder): IssueConnection!
  issue(number: Int!): Issue
  defaultBranchRef: Ref
  object(expression: String!): GitObject }
type Ref { name: String target: GitObject }
type GitObject { oid: String abbreviatedOid: String text: String }
type IssueConnection { totalCount: Int! nodes: [Issue!]! pageInfo: PageInfo! edges: [IssueEdge!]! }
type IssueEdge { cursor: String node: Issue }
type Issue implements Node { id: ID! number: Int title: String body: String state: IssueState author: User
  createdAt: DateTime comments(first: Int): [Comment!]! labels(first: Int): [Label!]! }
type Label { name: String color: String }
type Comment { id: ID! body: String author: User createdAt: DateTime }
type PageInfo { hasNextPage: Boolean! endCursor: String hasPreviousPage: Boolean startCursor: String }
type SearchConnection { repositoryCount: Int issueCount: Int nodes: [SearchResultItem] pageInfo: PageInfo! }
type RateLimit { limit: Int cost: Int remaining: Int resetAt: DateTime }
type Product { id: ID! title: String handle: String descriptionHtml: String vendor: String productType: String
  tags: [String!] totalInventory: Int onlineStoreUrl: URI variants(first: Int): [Variant!]!
  images(first: Int, maxWidth: Int): [Image!]! priceRange: PriceRange }
type Variant { id: ID! title: String price: String sku: String availableForSale: Boolean }
type Image { url(transform: JSON): URI altText: String width: Int height: Int }
type PriceRange { minVariantPrice: Money maxVariantPrice: Money }
type Money { amount: String currencyCode: String }
type Order { id: ID! name: String email: String totalPrice: String createdAt: DateTime lineItems(first: Int): [LineItem!]!
  customer: Customer }
type LineItem { title: String quantity: Int sku: String }
type Customer { id: ID! email: String firstName: String lastName: String note: String }
type Shop { name: String email: String currencyCode: String primaryDomain: Domain }
type Domain { host: String url: URI }
type LaunchConnection { cursor: String! hasMore: Boolean! launches: [Launch]! }
type Launch { id: ID! site: String mission: Mission rocket: Rocket isBooked: Boolean! }
type Mission { name: String missionPatch(size: PatientSize): String }
type Rocket { id: ID! name: String type: String }
type TripUpdateResponse { success: Boolean! message: String launches: [Launch] }
type Country { code: ID! name: String native: String capital: String emoji: String currency: String
  languages: [Language!]! continent: Continent }
type Language { code: ID! name: String }
type Continent { code: ID! name: String }
"""

schema = build_schema(SDL)
FILES = Path(__file__).resolve().parent / "specs"  # pasteFile reads from here (and, unchecked, anywhere)


def _database() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", check_same_thread=False)
    db.execute("CREATE TABLE pastes (id INTEGER PRIMARY KEY, title TEXT, content TEXT, public INTEGER)")
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, username TEXT, password TEXT)")
    db.executemany(
        "INSERT INTO pastes (title, content, public) VALUES (?, ?, ?)",
        [("hello", "first paste", 1), ("notes", "shopping list", 1), ("private", "the secret plan", 0)],
    )
    db.execute("INSERT INTO users (username, password) VALUES ('admin', 'hunter2-admin-password')")
    return db


DB = _database()


def _rows(sql: str) -> list[dict[str, Any]]:
    """Run SQL built by concatenation, as the vulnerable application does."""
    cur = DB.execute(sql)
    return [{"id": str(r[0]), "title": str(r[1]), "content": str(r[2]), "public": bool(r[3])} for r in cur.fetchall()]


class Root:
    @staticmethod
    def pastes(info, public=None, limit=None, filter=None):
        where = f"title LIKE '%{filter}%'" if filter is not None else "1=1"
        if public is not None:
            where += f" AND public = {int(public)}"
        return _rows(f"SELECT id, title, content, public FROM pastes WHERE {where} LIMIT {limit or 100}")

    @staticmethod
    def paste(info, id, title=None):
        found = _rows(f"SELECT id, title, content, public FROM pastes WHERE id = {id}")
        return found[0] if found else None

    @staticmethod
    def searchPastes(info, filter=None, first=None, after=None):
        title = (filter or {}).get("title") or ""
        return _rows(f"SELECT id, title, content, public FROM pastes WHERE title LIKE '%{title}%' LIMIT {first or 10}")

    @staticmethod
    def pasteFile(info, name):
        try:
            return (FILES / name).read_text(errors="replace")[:2000]
        except OSError as exc:
            return f"error: {exc.strerror}"

    @staticmethod
    def systemDiagnostics(info, username=None, password=None, cmd=None):
        out = subprocess.run(f"echo diagnostics {cmd or ''}", shell=True, capture_output=True, timeout=5)
        return out.stdout.decode(errors="replace")

    systemHealth = "ok"

    @staticmethod
    def createPaste(info, title=None, content=None, public=True, burn=False):
        cur = DB.execute("INSERT INTO pastes (title, content, public) VALUES (?, ?, ?)", (title, content, int(public)))
        return {"paste": {"id": str(cur.lastrowid), "title": title, "content": content, "public": public}}

    @staticmethod
    def uploadPaste(info, filename, content):
        return f"would write {len(content)} bytes to {filename}"

    @staticmethod
    def importPaste(info, host, path, port=None, scheme="http"):
        url = f"{scheme}://{host}:{port or 80}{path}"
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 - the vulnerability
                return resp.read(2000).decode(errors="replace")
        except Exception as exc:
            return f"error: {exc}"


def _fake(t: Any, depth: int = 0) -> Any:
    if isinstance(t, GraphQLNonNull):
        return _fake(t.of_type, depth)
    if isinstance(t, GraphQLList):
        return [_fake(t.of_type, depth + 1) for _ in range(2)] if depth < 4 else []
    if isinstance(t, GraphQLEnumType):
        return next(iter(t.values.values())).value
    if isinstance(t, (GraphQLInterfaceType, GraphQLUnionType)):
        types = schema.get_possible_types(t)
        return {"__typename": types[0].name}
    if isinstance(t, GraphQLObjectType):
        return {}
    if isinstance(t, GraphQLScalarType):
        return {"Int": 2, "Float": 1.5, "Boolean": True, "ID": "1"}.get(t.name, "text")
    return None


def _resolver(source: Any, info: Any, **args: Any) -> Any:
    value = default_field_resolver(source, info, **args)
    if value is None and not (isinstance(source, dict) and info.field_name in source):
        if info.parent_type.name in ("Query", "Mutation") and info.field_name in ("paste", "node"):
            return value
        return _fake(info.return_type)
    return value


RECEIVED: list[dict] = []


async def _read(receive) -> bytes:
    chunks = []
    while True:
        m = await receive()
        chunks.append(m.get("body", b""))
        if not m.get("more_body"):
            return b"".join(chunks)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = await _read(receive)
    url = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    ctype = dict(scope["headers"]).get(b"content-type", b"").split(b";")[0].strip()
    if scope["path"] != "/graphql":  # the REST side: echoes what it got
        out: Any = {"path": scope["path"], "query": url, "body_len": len(body)}
    else:
        if scope["method"] == "GET":
            ops = [dict(url, variables=json.loads(url["variables"]) if url.get("variables") else None)]
        elif ctype == b"application/graphql":
            ops = [{"query": body.decode()}]
        elif ctype == b"application/x-www-form-urlencoded":
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            ops = [dict(form, variables=json.loads(form["variables"]) if form.get("variables") else None)]
        else:
            doc = json.loads(body)
            ops = doc if isinstance(doc, list) else [doc]
        results = []
        for op in ops:
            RECEIVED.append(op)
            r = await graphql(
                schema,
                op.get("query", ""),
                root_value=Root,
                variable_values=op.get("variables"),
                operation_name=op.get("operationName"),
                field_resolver=_resolver,
            )
            res: dict[str, Any] = {"data": r.data}
            if r.errors:
                res["errors"] = [{"message": e.message} for e in r.errors]
            results.append(res)
        out = results if body.lstrip()[:1] == b"[" else results[0]
    data = json.dumps(out).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})
