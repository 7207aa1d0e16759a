"""Errors of the connectors.

ConnectorError              root; a :class:`broker.errors.BrokerError`
├── ConnectorInputError     a setting or the credential file is malformed (400)
├── ConnectorNotFound       no connector of that name (404)
├── ConnectorConflict       the name or the prefix is taken (409)
└── ExternalError           the external system failed a call (never shown to the API as is)
    ├── ExternalDown        it cannot be reached, timed out or answered 5xx: try again later
    ├── ExternalRefused     it refused our credential or lacks a right (401/403): an admin
    │                       must act; the connector is marked unhealthy
    └── ExternalRejected    it refused the request itself (4xx): trying again will not help
"""

from __future__ import annotations

from broker.errors import BrokerError


class ConnectorError(BrokerError):
    code = "connector_error"
    http_status = 500


class ConnectorInputError(ConnectorError):
    code = "invalid_input"
    http_status = 400


class ConnectorNotFound(ConnectorError):
    code = "connector_not_found"
    http_status = 404


class ConnectorConflict(ConnectorError):
    code = "connector_exists"
    http_status = 409


class ExternalError(ConnectorError):
    code = "external_error"
    http_status = 502


class ExternalDown(ExternalError):
    code = "external_unavailable"
    http_status = 503


class ExternalRefused(ExternalError):
    code = "external_refused"
    http_status = 502


class ExternalRejected(ExternalError):
    code = "external_rejected"
    http_status = 502
