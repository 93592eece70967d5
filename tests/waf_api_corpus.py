"""The WAF's API-input corpora: realistic GraphQL operations and REST requests that must pass at
paranoia 1, and attacks in argument values, variables and path parameters that must be refused.

The GraphQL operations are written the way clients of public GraphQL APIs write them (a code host
in the style of GitHub's v4 API, a shop in the style of Shopify's Admin API, Apollo's space-launch
tutorial, a countries API, a pastebin-like app); they run against tests/graphql_pastes_app.py.
Each entry: (name, query, variables, transport) with transport json | get | graphql | form | batch.
"""

from __future__ import annotations

from typing import Any

Op = tuple[str, str, dict[str, Any] | None, str]

GRAPHQL_BENIGN: list[Op] = [
    # a pastebin-like app
    ("pastes list", "{ pastes { id title } }", None, "json"),
    ("pastes list GET", "{ pastes { id title } }", None, "get"),
    ("pastes app/graphql", "query { pastes { id title content } }", None, "graphql"),
    ("public pastes", "query GetPastes { pastes(public: true, limit: 10) { id title content public } }", None, "json"),
    ("filter pastes", 'query { pastes(filter: "hello") { id title } }', None, "json"),
    ("filter pastes GET", 'query { pastes(filter: "shopping list") { id title } }', None, "get"),
    (
        "paste by id var",
        "query Paste($id: ID!) { paste(id: $id) { id title content owner { id name } } }",
        {"id": "1"},
        "json",
    ),
    (
        "create paste",
        "mutation CreatePaste($title: String!, $content: String!, $public: Boolean) {\n"
        "  createPaste(title: $title, content: $content, public: $public) { paste { id title content } }\n}",
        {"title": "Meeting notes", "content": "Agenda: 1. budget; 2. hiring (select candidates)", "public": False},
        "json",
    ),
    (
        "create paste literal",
        'mutation { createPaste(title: "Grocery list", content: "eggs, milk & bread", burn: false) '
        "{ paste { id title } } }",
        None,
        "json",
    ),
    (
        "create paste code",
        'mutation($c: String!) { createPaste(title: "snippet.py", content: $c) { paste { id } } }',
        {"c": "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n"},
        "json",
    ),
    (
        "edit paste",
        'mutation { editPaste(id: 1, title: "Updated title", content: "new text") { id title } }',
        None,
        "json",
    ),
    ("delete paste", "mutation DeletePaste($id: ID!) { deletePaste(id: $id) }", {"id": "3"}, "json"),
    ("health", "query { systemHealth }", None, "get"),
    (
        "search pastes input",
        "query Search($filter: PasteFilter, $first: Int) { searchPastes(filter: $filter, first: $first) { id title } }",
        {"filter": {"title": "notes", "public": True}, "first": 20},
        "json",
    ),
    (
        "search pastes literal input",
        'query { searchPastes(filter: {title: "hello", burn: false}, first: 5, after: "YXJyYXljb25uZWN0aW9uOjQ=") '
        "{ id title createdAt } }",
        None,
        "json",
    ),
    (
        "login",
        "mutation Login($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken refreshToken } }",
        {"u": "alice", "p": "correct horse battery staple"},
        "json",
    ),
    (
        "register",
        "mutation Register($userData: UserInput!) { createUser(userData: $userData) { id login email } }",
        {"userData": {"username": "bob_smith", "email": "bob.smith@example.com", "password": "S3cure!Pass#2024"}},
        "json",
    ),
    ("upload paste", 'mutation { uploadPaste(filename: "notes.txt", content: "plain text") }', None, "json"),
    # a code host in the style of GitHub's GraphQL API v4
    ("viewer", "query { viewer { login name bio avatarUrl(size: 64) } }", None, "json"),
    (
        "repository issues",
        "query($owner: String!, $name: String!) {\n  repository(owner: $owner, name: $name) {\n"
        "    issues(last: 20, states: CLOSED) { edges { node { title url: body labels(first: 5) { name } } } }\n  }\n}",
        {"owner": "octocat", "name": "Hello-World"},
        "json",
    ),
    (
        "repository issues ordered",
        'query { repository(owner: "facebook", name: "react") { issues(first: 10, states: [OPEN], '
        "orderBy: {field: CREATED_AT, direction: DESC}) { totalCount nodes { number title createdAt author { login } } "
        "pageInfo { hasNextPage endCursor } } } }",
        None,
        "json",
    ),
    (
        "repository with fragment",
        "query RepoInfo($owner: String!, $name: String!) { repository(owner: $owner, name: $name) { ...RepoFields } }\n"
        "fragment RepoFields on Repository { id nameWithOwner description stargazerCount isPrivate visibility "
        "owner { login } defaultBranchRef { name target { abbreviatedOid } } }",
        {"owner": "torvalds", "name": "linux"},
        "json",
    ),
    (
        "search repositories",
        "query SearchRepos($q: String!) { search(query: $q, type: REPOSITORY, first: 10) { repositoryCount "
        "nodes { ... on Repository { nameWithOwner stargazerCount description } } } }",
        {"q": "language:python stars:>1000 sort:stars-desc"},
        "json",
    ),
    (
        "search issues literal",
        'query { search(query: "repo:rust-lang/rust is:issue is:open label:C-bug", type: ISSUE, first: 5) '
        "{ issueCount nodes { ... on Issue { number title state } } } }",
        None,
        "json",
    ),
    (
        "search users inline fragments",
        'query { search(query: "location:Berlin followers:>100", type: USER, first: 3) '
        "{ nodes { __typename ... on User { login name } ... on Repository { nameWithOwner } } pageInfo { endCursor } } }",
        None,
        "get",
    ),
    (
        "file contents",
        'query { repository(owner: "octocat", name: "Hello-World") { object(expression: "main:README.md") '
        "{ text oid } } }",
        None,
        "json",
    ),
    (
        "node by id",
        "query($id: ID!) { node(id: $id) { id ... on Issue { title } ... on Repository { name } } }",
        {"id": "MDExOlB1bGxSZXF1ZXN0MzQ3Nzk0NDg3"},
        "json",
    ),
    (
        "nodes",
        'query { nodes(ids: ["MDQ6VXNlcjU4MzIzMQ==", "MDEwOlJlcG9zaXRvcnkxMjk2MjY5"]) { id } }',
        None,
        "json",
    ),
    ("rate limit", "query { rateLimit { limit cost remaining resetAt } }", None, "get"),
    (
        "create issue",
        "mutation CreateIssue($input: CreateIssueInput!) { createIssue(input: $input) { number title } }",
        {
            "input": {
                "repositoryId": "R_kgDOGq0JCA",
                "title": "Crash when the config file is missing",
                "body": "### Steps to reproduce\n1. Remove `config.yaml`\n2. Run `app --serve`\n\n"
                "Expected: a clear error. Actual: a stack trace.",
                "labelIds": ["LA_kwDOGq0JCM7vVz4T"],
            }
        },
        "json",
    ),
    (
        "add comment",
        "mutation($subject: ID!, $body: String!) { addComment(subjectId: $subject, body: $body) { id body } }",
        {"subject": "I_kwDOABCD", "body": "Thanks! Fixed in #1234 - please re-open if it still happens on v2.1."},
        "json",
    ),
    ("add star", 'mutation { addStar(starrableId: "MDEwOlJlcG9zaXRvcnkxMjk2MjY5") { stargazerCount } }', None, "json"),
    (
        "user repositories aliases",
        'query { a: user(login: "gaearon") { repositories(first: 5) { name } } '
        'b: user(login: "sindresorhus") { repositories(first: 5, orderBy: "STARGAZERS") { name } } }',
        None,
        "json",
    ),
    # a shop in the style of Shopify's Admin GraphQL API
    (
        "products",
        "query { products(first: 10) { id title handle vendor totalInventory priceRange "
        "{ minVariantPrice { amount currencyCode } } } }",
        None,
        "json",
    ),
    (
        "products search",
        'query Products($query: String) { products(first: 25, query: $query, sortKey: "TITLE", reverse: false) '
        "{ id title tags } }",
        {"query": "title:shirt AND vendor:'Acme Co' AND product_type:Apparel"},
        "json",
    ),
    (
        "product by handle",
        'query { product(handle: "classic-leather-jacket") { id title descriptionHtml variants(first: 5) '
        "{ id title price sku availableForSale } images(first: 3, maxWidth: 800) { url altText width } } }",
        None,
        "get",
    ),
    (
        "product create",
        "mutation productCreate($input: ProductInput!) { productCreate(input: $input) { id title handle } }",
        {
            "input": {
                "title": "Cool socks",
                "vendor": "Sock Co.",
                "productType": "Accessories",
                "descriptionHtml": "<p>Soft, breathable socks.</p><ul><li>100% cotton</li><li>Machine washable</li></ul>"
                '<p><a href="/pages/size-guide">Size guide</a></p>',
                "tags": ["socks", "cotton", "summer-2024"],
                "handle": "cool-socks",
                "variants": [{"price": "9.99", "sku": "SOCK-001", "option1": "Small", "inventoryQuantity": 100}],
                "seo": {"title": "Cool socks | Sock Co.", "description": "Buy the coolest socks online."},
            }
        },
        "json",
    ),
    (
        "orders",
        'query { orders(first: 10, query: "created_at:>2024-01-01 financial_status:paid") { id name email '
        "totalPrice createdAt lineItems(first: 5) { title quantity sku } customer { firstName lastName } } }",
        None,
        "json",
    ),
    (
        "customer create",
        "mutation customerCreate($input: CustomerInput!) { customerCreate(input: $input) { id email } }",
        {
            "input": {
                "email": "steve.lastnameson@example.com",
                "firstName": "Steve",
                "lastName": "Lastnameson",
                "note": "Prefers delivery after 5pm; ring twice.",
                "addresses": [
                    {
                        "address1": "412 Fake St.",
                        "city": "Ottawa",
                        "province": "ON",
                        "zip": "A1A 4A1",
                        "country": "CA",
                        "phone": "+16135551111",
                    }
                ],
            }
        },
        "json",
    ),
    ("shop", "{ shop { name email currencyCode primaryDomain { host url } } }", None, "get"),
    (
        "sale product",
        'mutation { productCreate(input: {title: "Summer sale: 50% off all tees", tags: ["sale", "-50%"]}) { id } }',
        None,
        "json",
    ),
    (
        "image transform",
        'query { product(id: "gid://shopify/Product/108828309") { images(first: 1) '
        "{ url(transform: {maxWidth: 200, maxHeight: 200, crop: CENTER}) } } }",
        None,
        "json",
    ),
    # Apollo's full-stack tutorial (space launches)
    (
        "launch list",
        "query LaunchList($after: String) { launches(after: $after) { cursor hasMore launches "
        "{ id isBooked rocket { id name } mission { name missionPatch(size: SMALL) } } } }",
        {"after": None},
        "json",
    ),
    (
        "launch list page",
        "query GetLaunches($pageSize: Int, $after: String) { launches(pageSize: $pageSize, after: $after) "
        "{ cursor hasMore launches { ...LaunchTile } } }\n"
        "fragment LaunchTile on Launch { __typename id isBooked rocket { id name } mission { name missionPatch } }",
        {"pageSize": 20, "after": "1583556631"},
        "json",
    ),
    (
        "launch details",
        "query LaunchDetails($launchId: ID!) { launch(id: $launchId) { id site isBooked rocket { id name type } "
        "mission { name missionPatch(size: LARGE) } } }",
        {"launchId": "60"},
        "get",
    ),
    (
        "book trips",
        "mutation BookTrips($launchIds: [ID]!) { bookTrips(launchIds: $launchIds) { success message "
        "launches { id isBooked } } }",
        {"launchIds": ["67", "68", "69"]},
        "json",
    ),
    (
        "cancel trip",
        "mutation cancel($launchId: ID!) { cancelTrip(launchId: $launchId) { success message } }",
        {"launchId": "67"},
        "json",
    ),
    ("apollo login", 'mutation { login(email: "daisy@apollographql.com") { accessToken } }', None, "json"),
    ("me trips", "query GetMyTrips { me { id email trips { id mission { name } } } }", None, "json"),
    # a countries API
    ("countries", "{ countries { code name emoji capital } }", None, "get"),
    (
        "countries filter",
        'query { countries(filter: {continent: {eq: "EU"}, currency: {in: ["EUR", "CHF"]}}) '
        "{ code name languages { name } } }",
        None,
        "json",
    ),
    (
        "countries regex",
        "query Filtered($f: CountryFilter) { countries(filter: $f) { code name native } }",
        {"f": {"code": {"regex": "^(US|CA|MX)$"}}},
        "json",
    ),
    (
        "country by code",
        'query { country(code: "BR") { name native capital currency continent { name } } }',
        None,
        "get",
    ),
    # operations with directives, defaults, several operations, batches
    (
        "directives",
        'query Repo($withIssues: Boolean = false, $skipOwner: Boolean!) { repository(owner: "vuejs", name: "core") '
        "{ name owner @skip(if: $skipOwner) { login } issues(first: 3) @include(if: $withIssues) { totalCount } } }",
        {"skipOwner": True},
        "json",
    ),
    (
        "named operations",
        "query A { pastes(limit: 2) { id } }\nquery B { users(first: 2) { id login } }",
        None,
        "json-b",
    ),
    (
        "batch",
        "",
        None,
        "batch",
    ),
    (
        "users with cursor",
        'query { users(first: 50, after: "Y3Vyc29yOnYyOpHOAAjN0A==", role: "admin") { id login createdAt } }',
        None,
        "form",
    ),
    (
        "typename and introspection-free",
        "query { __typename viewer { __typename id login pastes(first: 3) { id title } } }",
        None,
        "json",
    ),
    (
        "multiline block string",
        'mutation { createPaste(title: "README", content: """\n# Project\n\nRun `make test` and '
        'open http://localhost:8080/ in your browser.\n""") { paste { id } } }',
        None,
        "json",
    ),
    (
        "unicode",
        'mutation($t: String!) { createPaste(title: $t, content: "caf\\u00e9 cr\\u00e8me br\\u00fbl\\u00e9e") '
        "{ paste { id } } }",
        {"t": "日本語のメモ – déjà vu"},
        "json",
    ),
]
# the batch entry's operations (transport "batch"): a JSON array of two operations
BATCH = [
    {"query": "query { pastes(limit: 3) { id title } }"},
    {"query": "query Me { viewer { login } }", "operationName": "Me"},
]
OPERATION_NAMES = {"named operations": "B"}

# attacks in argument values, variables, nested input objects, fragments; each with the class and
# an oracle (what the vulnerable upstream answers when the payload reaches it)
GRAPHQL_ATTACKS: list[tuple[str, str, str, dict[str, Any] | None, str, str]] = [
    ("sqli literal", "sqli", '{ pastes(filter: "\' OR 1=1 --") { id title content } }', None, "json", "secret plan"),
    (
        "sqli union variable",
        "sqli",
        "query($id: ID!) { paste(id: $id) { id title content } }",
        {"id": "0 UNION SELECT id, username, password, 1 FROM users"},
        "json",
        "hunter2",
    ),
    (
        "sqli nested input",
        "sqli",
        "query($f: PasteFilter) { searchPastes(filter: $f) { title content } }",
        {"f": {"title": "zz' UNION SELECT id, username, password, 1 FROM users --"}},
        "json",
        "hunter2",
    ),
    (
        "sqli in fragment alias",
        "sqli",
        "query { ...F }\nfragment F on Query { p: pastes(filter: \"x' UNION SELECT 1, username, password, 1 "
        'FROM users --") { title content } }',
        None,
        "json",
        "hunter2",
    ),
    ("sqli GET", "sqli", "{ pastes(filter: \"' OR '1'='1\") { content } }", None, "get", "secret plan"),
    (
        "sqli escaped",
        "sqli",
        '{ pastes(filter: "\\u0027 \\u004fR 1=1 --") { content } }',
        None,
        "graphql",
        "secret plan",
    ),
    (
        "cmd literal",
        "cmd",
        '{ systemDiagnostics(username: "admin", password: "x", cmd: "; cat /etc/passwd") }',
        None,
        "json",
        "root:",
    ),
    (
        "cmd variable",
        "cmd",
        "query($c: String) { systemDiagnostics(cmd: $c) }",
        {"c": "$(cat /etc/passwd)"},
        "json",
        "root:",
    ),
    ("cmd form", "cmd", '{ systemDiagnostics(cmd: "| cat /etc/passwd") }', None, "form", "root:"),
    (
        "traversal literal",
        "traversal",
        '{ pasteFile(name: "../../../../../../etc/passwd") }',
        None,
        "json",
        "root:",
    ),
    (
        "traversal variable",
        "traversal",
        "query($n: String!) { pasteFile(name: $n) }",
        {"n": "../../../../../../../etc/passwd"},
        "get",
        "root:",
    ),
    (
        "xss literal",
        "xss",
        'mutation { createPaste(title: "t", content: "<script>alert(document.cookie)</script>") '
        "{ paste { content } } }",
        None,
        "json",
        "<script>",
    ),
    (
        "xss variable",
        "xss",
        'mutation($c: String) { createPaste(title: "t", content: $c) { paste { content } } }',
        {"c": "<img src=x onerror=alert(1)>"},
        "json",
        "onerror",
    ),
    (
        "xss batch",
        "xss",
        'mutation { createPaste(title: "<svg/onload=alert(1)>", content: "c") { paste { title } } }',
        None,
        "batch",
        "onload",
    ),
]

# REST: (name, method, target, content type, body); the route templates are in the test's config
REST_BENIGN: list[tuple[str, str, str, str | None, bytes | None]] = [
    ("user by name", "GET", "/users/v1/alice", None, None),
    ("user with dot", "GET", "/users/v1/john.doe", None, None),
    ("user apostrophe", "GET", "/users/v1/o%27brien", None, None),
    ("book by title", "GET", "/books/v1/The%20Pragmatic%20Programmer", None, None),
    ("book title with punctuation", "GET", "/books/v1/Harry%20Potter%20and%20the%20Half-Blood%20Prince", None, None),
    ("order by id", "GET", "/api/orders/12345", None, None),
    ("order uuid", "GET", "/api/orders/550e8400-e29b-41d4-a716-446655440000", None, None),
    ("file by name", "GET", "/api/files/report-2024.pdf", None, None),
    ("date param", "GET", "/api/reports/2024-01-15/summary", None, None),
    ("email param", "GET", "/users/v1/alice%40example.org", None, None),
    ("query and path", "GET", "/api/orders/42?include=items&sort=-created_at", None, None),
    (
        "nested json",
        "POST",
        "/api/orders/42",
        "application/json",
        b'{"customer": {"name": "Ana", "address": {"street": "12 Rue de la Paix", "city": "Paris"}}, '
        b'"items": [{"sku": "A-1", "qty": 2, "note": "gift wrap, please"}, {"sku": "B-7", "qty": 1}]}',
    ),
    (
        "json prose",
        "PUT",
        "/users/v1/alice",
        "application/json",
        b'{"bio": "I select the best coffee beans and update my blog from Berlin", "links": ["https://example.com"]}',
    ),
    (
        "json arrays of arrays",
        "POST",
        "/api/reports/2024-01-15/summary",
        "application/json",
        b'{"matrix": [[1, 2], [3, 4]], "labels": [["a", "b"], ["c"]], "ok": true, "none": null}',
    ),
    ("delete by id", "DELETE", "/api/orders/77", None, None),
]

REST_ATTACKS: list[tuple[str, str, str, str, str | None, bytes | None]] = [
    ("sqli path quote", "sqli", "GET", "/users/v1/x%27%20or%20%271%27=%271", None, None),
    ("sqli path union", "sqli", "GET", "/users/v1/1%20union%20select%20password%20from%20users--", None, None),
    ("sqli path numeric", "sqli", "GET", "/api/orders/1%20or%201=1", None, None),
    # ("/" and ";" encoded in a path are refused by the gateway's path rules before the WAF)
    ("xss path", "xss", "GET", "/books/v1/%3Cimg%20src=x%20onerror=alert(1)%3E", None, None),
    ("cmd path", "cmd", "GET", "/api/files/x%20%26%26%20whoami", None, None),
    (
        "sqli nested json",
        "sqli",
        "POST",
        "/api/orders/42",
        "application/json",
        b'{"customer": {"address": {"street": "1\' OR \'1\'=\'1\' --"}}}',
    ),
    (
        "xss json array",
        "xss",
        "POST",
        "/api/orders/42",
        "application/json",
        b'{"items": [{"sku": "A"}, {"note": "<script>alert(document.cookie)</script>"}]}',
    ),
    (
        "cmd json deep array",
        "cmd",
        "PUT",
        "/users/v1/alice",
        "application/json",
        b'{"a": [[[{"b": "; cat /etc/passwd"}]]]}',
    ),
]

# Ordinary text that CRS itself refuses at paranoia 1 wherever it is sent (a REST JSON body or a
# GraphQL variable alike): Markdown's numbered "1. Delete `x`" reads to rule 942360 as SQL. Kept
# apart from the sets above and documented in docs/waf.md (exclude_rules: [942360] where issue
# text is posted); the tests check GraphQL arguments are judged exactly as REST values.
# (Also known, and not about arguments: a path ending in ".com", e.g. /users/v1/alice@example.com,
# is refused by 920440, CRS's restricted file extensions, which judges the path's last segment.)
CRS_PROSE_FALSE_POSITIVES = [
    "### Steps to reproduce\n1. Delete `config.yaml`\n2. Run `app --serve`",
]
