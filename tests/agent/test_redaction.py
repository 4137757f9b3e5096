"""URLs shown to people (a browser, an error line) keep their host, never their password."""

import pytest

from handoff_agent.redaction import redact_urls


@pytest.mark.parametrize(
    "text, shown",
    [
        ("https://it:hunter2@central:8890", "https://it:***@central:8890"),
        ("http://minio:p@ss:w0rd@10.0.0.1:9000/b", "http://minio:***@10.0.0.1:9000/b"),
        ('Could not connect to "http://a:b@h:1/x".', 'Could not connect to "http://a:***@h:1/x".'),
        ("https://central:8890/api?token=abc&x=1", "https://central:8890/api?token=***&x=1"),
        ("http://127.0.0.1:8890", "http://127.0.0.1:8890"),
        ("http://user@host:1", "http://user@host:1"),
        (None, None),
        ("", ""),
    ],
)
def test_a_password_in_a_url_is_starred(text, shown):
    assert redact_urls(text) == shown
