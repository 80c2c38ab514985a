"""The web UI's forms through Flask's test client: the CSRF token, the first visit's password."""
from __future__ import annotations

import re

PASSWORD = "correct horse battery"


def csrf(page: bytes) -> str:
    """The CSRF token a page's forms carry."""
    match = re.search(rb'name="csrf_token" value="([^"]+)"', page)
    assert match, "page has no CSRF token"
    return match.group(1).decode()


def set_password(client, password: str = PASSWORD):
    """The first visit: set the admin password on /setup (which also logs in); the reply."""
    page = client.get("/setup").data
    return client.post("/setup", data={"csrf_token": csrf(page), "new_password": password, "confirm_password": password})


def logged_in(app):
    """A test client of ``app``, its password set and logged in."""
    client = app.test_client()
    assert set_password(client).status_code == 302
    return client
