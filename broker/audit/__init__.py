"""The tamper-evident audit log: a pure hash chain (chain.py) and its storage (log.py)."""

from broker.audit.chain import AuditRecord, VerifyReport, verify_chain
from broker.audit.log import AuditLog, audit_target

__all__ = ["AuditLog", "AuditRecord", "VerifyReport", "audit_target", "verify_chain"]
