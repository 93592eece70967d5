from bastion.gateway.router import Route, Router


def make(*specs):
    routes = []
    for spec in specs:
        pattern, methods, host = (spec + (None, None))[:3]
        routes.append(
            Route(
                name=pattern,
                pattern=pattern,
                methods=frozenset(methods) if methods else None,
                host=host,
                target=pattern,
            )
        )
    return Router(routes)


def target(router, method, path, host="api.example.com"):
    m = router.match(method, path, host)
    return m.route.target if m.route else None


def test_literal_beats_param_beats_wildcard():
    r = make(("/*",), ("/users/*",), ("/users/{id}",), ("/users/me",))
    assert target(r, "GET", "/users/me") == "/users/me"
    assert target(r, "GET", "/users/7") == "/users/{id}"
    assert target(r, "GET", "/users/7/orders") == "/users/*"
    assert target(r, "GET", "/other") == "/*"


def test_params_are_captured():
    r = make(("/users/{user_id}/orders/{order_id}",))
    m = r.match("GET", "/users/7/orders/x-1", "h")
    assert m.params == {"user_id": "7", "order_id": "x-1"}


def test_trailing_slash_matches_the_same_route():
    r = make(("/*",), ("/admin",))
    assert target(r, "GET", "/admin/") == "/admin"
    assert target(r, "GET", "/admin") == "/admin"


def test_wildcard_matches_its_own_prefix_but_not_a_longer_word():
    r = make(("/admin/*",), ("/*",))
    assert target(r, "GET", "/admin") == "/admin/*"
    assert target(r, "GET", "/admin/a/b") == "/admin/*"
    assert target(r, "GET", "/administrator") == "/*"


def test_wrong_method_is_405_and_never_falls_through_to_a_broader_route():
    r = make(("/*",), ("/admin", ["GET"]))
    m = r.match("POST", "/admin", "h")
    assert m.route is None
    assert m.allowed == {"GET", "HEAD"}


def test_same_path_split_by_method():
    r = make(("/users", ["GET"]), ("/users", ["POST"]))
    assert r.match("POST", "/users", "h").route.methods == {"POST"}
    assert r.match("GET", "/users", "h").route.methods == {"GET"}
    assert r.match("DELETE", "/users", "h").allowed == {"GET", "POST", "HEAD"}


def test_head_is_allowed_where_get_is():
    r = make(("/users", ["GET"]))
    assert target(r, "HEAD", "/users") == "/users"


def test_case_sensitive_by_default():
    r = make(("/admin",))
    assert target(r, "GET", "/ADMIN") is None
    ci = Router([Route(name="a", pattern="/admin", methods=None, host=None, target="a", case_sensitive=False)])
    assert target(ci, "GET", "/ADMIN") == "a"


def test_host_routes_win_and_must_match():
    r = make(("/x",), ("/x", None, "api.example.com"), ("/x", None, "*.example.com"))
    assert target(r, "GET", "/x", "api.example.com:8443") == "/x"
    assert r.match("GET", "/x", "api.example.com").route.host == "api.example.com"
    assert r.match("GET", "/x", "www.example.com").route.host == "*.example.com"
    assert r.match("GET", "/x", "example.com.evil.com").route.host is None


def test_no_route():
    r = make(("/users",))
    m = r.match("GET", "/nothing", "h")
    assert m.route is None and not m.allowed


def test_params_are_percent_decoded_for_policies():
    r = make(("/users/{user_id}/orders",))
    assert r.match("GET", "/users/caf%C3%A9/orders", "h").params == {"user_id": "café"}
