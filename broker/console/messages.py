"""Sentences the console shows for refusal and error codes, marked for translation.

The API explains each refusal in an English sentence naming the objects involved; that
sentence is shown as it is in English. In other languages the code's sentence from here is
shown, translated, and the API's sentence follows as the detail (names are not translated)."""

from __future__ import annotations

from typing import Final


def N_(message: str) -> str:
    """Mark ``message`` for extraction; it is translated where it is shown."""
    return message


CODE_MESSAGES: Final = {
    # Session rules and ticket rights (broker.rules.permissions.REFUSAL_CODES).
    "staff_disabled": N_("Your account is disabled; ask an admin to enable it."),
    "customer_scope": N_("This ticket belongs to a customer you do not serve."),
    "admin_no_shell": N_("Admins do not get a shell; use a level-2 or level-3 account."),
    "admin_not_worker": N_("Admins manage tickets but do not work on them."),
    "ticket_not_open": N_("The ticket is resolved or closed; reopen it first."),
    "ticket_not_escalated": N_("The ticket is at level 1; escalate it to level 2 first."),
    "level_too_low": N_("The ticket is above your support level."),
    "not_assignee": N_("The ticket is assigned to someone else; ask them to reassign it."),
    "not_own_ticket": N_("This ticket is not yours; assign it to yourself first."),
    "not_assigned": N_("The ticket is not assigned to anyone."),
    "agent_not_linked": N_("This machine is not linked to the ticket; link it first."),
    "agent_customer": N_("This machine belongs to another customer than the ticket."),
    "agent_revoked": N_("This machine's agent was revoked; it must be enrolled again."),
    "agent_offline": N_("This machine is offline; its agent must be running and connected."),
    "session_ticket_mismatch": N_("This session belongs to another ticket."),
    "not_invited": N_("Joining needs level 3 or an invitation from the session's owner."),
    "observer_only": N_("Level-1 staff watch sessions but do not type."),
    "bad_level": N_("A support level is 1, 2 or 3."),
    "top_level": N_("The ticket is at the highest level already."),
    "not_upward": N_("Escalation goes to a higher level."),
    "escalate_too_far": N_("You can escalate at most to the level above your own."),
    "bottom_level": N_("The ticket is at level 1; there is no lower level."),
    "not_downward": N_("A hand-back goes to a lower level."),
    "assignee_disabled": N_("That account is disabled; choose an active colleague."),
    "assignee_admin": N_("Admins are not assignees; choose a staff member."),
    "assignee_customer_scope": N_("That colleague does not serve this ticket's customer."),
    "assignee_level_too_low": N_("That colleague works below the ticket's level."),
    "reason_required": N_("Say why: a reason is required."),
    "reason_too_long": N_("The reason is too long; put the details in a note."),
    "body_too_large": N_(
        "The form is too long for the broker; shorten the text (long output belongs in a "
        "ticket attachment) and send it again."
    ),
    # Sessions (broker.sessions: consent, admission, the manager).
    "consent_denied": N_("The person at the machine denied the session."),
    "consent_timeout": N_("Nobody at the machine answered in time."),
    "session_limit": N_("Too many sessions are open; end one and try again."),
    "shutting_down": N_("The broker is restarting; try again in a minute."),
    "session_full": N_("The session has as many participants as it may have."),
    "agent_refused": N_("The machine's agent refused to open the shell."),
    # Knowledge base (broker.kb.policy.REFUSAL_CODES and broker.kb.errors).
    "level_too_low_to_publish": N_(
        "Level-1 staff do not publish, retire or reopen articles; ask a level-2 or level-3 "
        "colleague to review it."
    ),
    "level_too_low_to_edit_published": N_(
        "Level-1 staff edit drafts only; write your addition into a new draft."
    ),
    "not_visible": N_("Level-1 staff see published articles and their own drafts only."),
    "admin_not_author": N_("Admins read the knowledge base but do not write it."),
    "version_conflict": N_(
        "Someone saved this article after you opened it. Your text is kept below: compare it "
        "with their change, then save again."
    ),
    "status_refused": N_("The article is not in a state that allows this."),
    "article_incomplete": N_("Write the problem and the solution before publishing."),
    "article_invalid": N_("Part of the article was not accepted; see the detail."),
    "article_not_found": N_("There is no such article, or you may not see it."),
    "source_not_found": N_("There is no such ticket that you may see."),
    "article_too_large": N_("The article is too large to show; split it into several articles."),
    # Console and API errors.
    "csrf_failed": N_("The form's security token is missing or out of date; reload the page."),
    "origin_refused": N_("This request came from another site and was refused."),
    "sign_in_required": N_("Please sign in."),
    "not_found": N_("This does not exist, or you may not see it."),
    "not_available": N_("This part of the broker is not available yet."),
    "forbidden": N_("You are not allowed to do this."),
    "scope_missing": N_("Your role does not allow this."),
    "validation_failed": N_("Some input was not accepted; check the form and try again."),
    "invalid_input": N_("Some input was not accepted; check the form and try again."),
    "conflict": N_("This was changed in the meantime; reload the page and try again."),
    "store_unavailable": N_("The broker cannot reach its database; try again shortly."),
    "unavailable": N_("A part of the broker is unavailable; try again shortly."),
}

# Short confirmations after a successful form, by the code in ?done=.
DONE_MESSAGES: Final = {
    "note": N_("Note added."),
    "escalated": N_("Ticket escalated."),
    "handed_back": N_("Ticket handed back."),
    "assigned": N_("Ticket assigned."),
    "resolved": N_("Ticket resolved."),
    "language": N_("Language saved."),
    "ssh_shift": N_(
        "Your SSH keys need no code for the rest of this shift, or until you sign out."
    ),
    "ssh_shift_no_keys": N_("You have no SSH key registered, so there is nothing to allow."),
    "kb_drafted": N_("Draft written from the ticket. Check it, remove what does not belong, save."),
    "kb_created": N_("Draft saved."),
    "kb_saved": N_("Article saved."),
    "kb_unchanged": N_("Nothing was changed, so nothing was saved."),
    "kb_publish": N_("Article published."),
    "kb_retire": N_("Article retired."),
    "kb_reopen": N_("Article reopened as a draft."),
    "kb_solved": N_("Noted: the article solved this ticket."),
    "kb_solved_known": N_("This article was already noted as this ticket's solution."),
    "kb_not_helped": N_("Noted: the article did not help. It is suggested last for this ticket."),
    "kb_not_helped_known": N_("This article was already noted as not helping with this ticket."),
    "kb_translation": N_("Draft of the other language's version, linked: translate and save."),
}

# The sign-in form's answers. One sentence for every failure, whatever failed.
LOGIN_FAILED: Final = N_("User name, password or code is wrong.")
LOGIN_THROTTLED: Final = N_("Too many failed sign-ins. Wait 15 minutes, then try again.")
# The directory accepted the password but gives the account no access (no group, disabled).
DIRECTORY_REFUSED: Final = N_("The company directory gives your account no access: {reason}.")
LOGIN_FORM_EXPIRED: Final = N_("The sign-in form was out of date; please try again.")
TOTP_MISMATCH: Final = N_("That code did not match. Type the code your app shows now.")
