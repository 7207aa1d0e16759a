"""Errors of the knowledge base.

KbError                     root; a BrokerError, so the API maps it to its ``http_status``
├── ArticleInvalid          a field is too long, a tag or OS name has the wrong syntax (422)
├── ArticleTooLarge         an article is too large to render or export (413)
├── ArticleNotFound         no such article, or the caller may not see it (404)
├── SourceNotFound          the ticket a draft or a "solved" mark names does not exist (404)
├── KbForbidden             the caller's role or customer scope does not allow it (403)
└── StatusRefused           the article is in the wrong status for the action (409)

Every message says what is wrong and what to do.
"""

from __future__ import annotations

from broker.errors import BrokerError


class KbError(BrokerError):
    """Root of every error the knowledge base raises on purpose."""

    code = "kb_error"
    http_status = 400


class ArticleInvalid(KbError):
    code = "article_invalid"
    http_status = 422


class ArticleTooLarge(KbError):
    code = "article_too_large"
    http_status = 413


class ArticleNotFound(KbError):
    code = "article_not_found"
    http_status = 404


class SourceNotFound(KbError):
    code = "source_not_found"
    http_status = 404


class KbForbidden(KbError):
    code = "forbidden"
    http_status = 403


# The code of a publish refused because the article still holds a detected secret.
REDACTION_NEEDED = "article_holds_secret"


class StatusRefused(KbError):
    code = "status_refused"
    http_status = 409
