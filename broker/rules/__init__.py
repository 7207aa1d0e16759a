"""The pure decision core: name syntax, the ticket state machine, and who may do what.

Nothing here does I/O, awaits, or reads the clock (callers pass ``now``); every function is
deterministic over its arguments, and every value is a frozen dataclass.

Modules:

- ``names``: strict parsers of user, customer and agent names, agent/session/ticket ids,
  labels and SSH target user names; ``sanitize_display_text`` for outside text shown to people.
- ``ticket_states``: the status table (``transition``, ``allowed_actions``) and the level
  changes (``escalate``, ``hand_back``).
- ``views``: the frozen views the decisions read (``StaffView``, ``TicketView``, ``AgentView``,
  ``LiveSessionView``) and the decisions themselves (``Allowed``, ``Refused``).
- ``permissions``: ``may_*`` decisions returning ``Allowed`` or ``Refused(code, reason)``.

Errors (``errors``):

RulesError              root, a ValueError; ``code`` is stable snake_case
├── InvalidName         a name, id, label or SSH target does not match its syntax
└── TransitionRefused   a ticket status change is not in the table
    └── LevelChangeRefused   an escalation or hand-back is not allowed
"""

from broker.rules.errors import InvalidName, LevelChangeRefused, RulesError, TransitionRefused
from broker.rules.names import (
    SSH_TARGET_MAX_LEN,
    TICKET_ID_MAX,
    Label,
    SshTarget,
    format_ticket_id,
    is_agent_id,
    is_session_id,
    parse_agent_id,
    parse_agent_name,
    parse_agent_ref,
    parse_customer_name,
    parse_label,
    parse_label_key,
    parse_label_value,
    parse_session_id,
    parse_ssh_target,
    parse_ticket_id,
    parse_ticket_ref,
    parse_user_name,
    sanitize_display_text,
)
from broker.rules.permissions import (
    REFUSAL_CODES,
    SHELL_MIN_LEVEL,
    may_assign,
    may_create_ticket,
    may_edit_ticket,
    may_escalate,
    may_hand_back,
    may_join_session,
    may_link_agent,
    may_observe_session,
    may_open_session,
    may_resolve,
    may_unassign,
    may_view_ticket,
)
from broker.rules.ticket_states import (
    ACTIONS,
    LEVELS,
    OPEN_STATUSES,
    REASON_MAX_LEN,
    STATUSES,
    TRANSITIONS,
    LevelChange,
    LevelChangeKind,
    TicketAction,
    TicketStatus,
    allowed_actions,
    check_escalation,
    check_hand_back,
    escalate,
    hand_back,
    is_open_status,
    transition,
)
from broker.rules.views import (
    ROLE_LEVEL,
    ROLES,
    AgentView,
    Allowed,
    Consent,
    Decision,
    LiveSessionView,
    Refused,
    Role,
    StaffView,
    TicketView,
)

__all__ = [
    "ACTIONS",
    "LEVELS",
    "OPEN_STATUSES",
    "REASON_MAX_LEN",
    "REFUSAL_CODES",
    "ROLES",
    "ROLE_LEVEL",
    "SHELL_MIN_LEVEL",
    "SSH_TARGET_MAX_LEN",
    "STATUSES",
    "TICKET_ID_MAX",
    "TRANSITIONS",
    "AgentView",
    "Allowed",
    "Consent",
    "Decision",
    "InvalidName",
    "Label",
    "LevelChange",
    "LevelChangeKind",
    "LevelChangeRefused",
    "LiveSessionView",
    "Refused",
    "Role",
    "RulesError",
    "SshTarget",
    "StaffView",
    "TicketAction",
    "TicketStatus",
    "TicketView",
    "TransitionRefused",
    "allowed_actions",
    "check_escalation",
    "check_hand_back",
    "escalate",
    "format_ticket_id",
    "hand_back",
    "is_agent_id",
    "is_open_status",
    "is_session_id",
    "may_assign",
    "may_create_ticket",
    "may_edit_ticket",
    "may_escalate",
    "may_hand_back",
    "may_join_session",
    "may_link_agent",
    "may_observe_session",
    "may_open_session",
    "may_resolve",
    "may_unassign",
    "may_view_ticket",
    "parse_agent_id",
    "parse_agent_name",
    "parse_agent_ref",
    "parse_customer_name",
    "parse_label",
    "parse_label_key",
    "parse_label_value",
    "parse_session_id",
    "parse_ssh_target",
    "parse_ticket_id",
    "parse_ticket_ref",
    "parse_user_name",
    "sanitize_display_text",
    "transition",
]
