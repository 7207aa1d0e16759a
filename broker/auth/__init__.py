"""Staff authentication: password hashing, API tokens and their scopes, one-time codes
(``totp``), second factor and shift windows, and who is calling (``principal``: the
:class:`~broker.auth.principal.Principal` every domain package judges requests by)."""
