"""The X-Portal-Signature header: what a receiver checks."""

from __future__ import annotations

from plugins_app.notifications.signing import header_value, verify

BODY = b'{"event": {"kind": "failed"}}'


class TestVerify:
    def test_signed_body__verifies(self):
        """A body signed with the secret verifies with the same secret."""
        header = header_value(secret="s3cret", body=BODY, timestamp=1_000)
        assert verify(secret="s3cret", body=BODY, header=header, now=1_010)

    def test_other_secret_or_body__refused(self):
        """Another secret, or a changed body, does not verify."""
        header = header_value(secret="s3cret", body=BODY, timestamp=1_000)
        assert not verify(secret="other", body=BODY, header=header, now=1_000)
        assert not verify(secret="s3cret", body=BODY + b" ", header=header, now=1_000)

    def test_old_timestamp__refused_as_a_replay(self):
        """A signature older than the tolerance (300 s) is refused even when it matches."""
        header = header_value(secret="s3cret", body=BODY, timestamp=1_000)
        assert not verify(secret="s3cret", body=BODY, header=header, now=1_301)

    def test_malformed_header__refused(self):
        """A header without a timestamp or a signature is refused, not an error."""
        assert not verify(secret="s3cret", body=BODY, header="v1=abc", now=1_000)
        assert not verify(secret="s3cret", body=BODY, header="t=x,v1=abc", now=1_000)
        assert not verify(secret="s3cret", body=BODY, header="t=1000", now=1_000)
