"""Component test of the consent question in the agent's own terminal (a pipe stands in)."""

from __future__ import annotations

import asyncio
import io
import os
from dataclasses import replace

from agent.consent import ConsentBook, ConsentRequest, ConsentService
from agent.consent_prompt import TerminalPrompt, describe_request
from agent.protocol import SessionEnv
from tests.component.test_agent_harness import WAIT

ENV = SessionEnv(
    session="s-" + "P" * 22,
    staff="alice",
    staff_level=2,
    ticket="T-77",
    ticket_title="Mail \x1b]52;c;aGk=\x07 broken",
)


async def test_typing_y_approves_the_oldest_request() -> None:
    """The question shows who asks (inert text); `y` on the terminal approves the request."""
    read_fd, write_fd = os.pipe()
    output = io.StringIO()
    service = ConsentService(ConsentBook(attended=True, timeout=60))
    prompt = TerminalPrompt(service, read_fd, output)
    prompt.start()
    try:
        waiter = asyncio.create_task(service.ask(ENV))
        await asyncio.sleep(0)  # one loop turn: the request registers and is printed
        shown = output.getvalue()
        assert "alice (support level 2)" in shown
        assert "T-77" in shown
        assert "\x1b" not in shown
        assert f"secondline-agent approve {ENV.session}" in shown
        os.write(write_fd, b"maybe\ny\n")
        async with asyncio.timeout(WAIT):
            decision = await waiter
        assert decision.decision == "approved"
        assert decision.by
        assert "type y to approve or n to deny" in output.getvalue()
    finally:
        prompt.close()
        service.close()
        os.close(read_fd)
        os.close(write_fd)


def test_question_text_without_title() -> None:
    """Without a ticket title the question names the ticket alone."""
    request_env = SessionEnv(session="s-" + "Q" * 22, staff="bob", staff_level=3, ticket="T-1")
    book = ConsentBook(attended=True, timeout=60)
    request = book.request(request_env, now=0)
    assert isinstance(request, ConsentRequest)
    text = describe_request(request)
    assert "for ticket T-1.\n" in text
    assert "may run commands and read and write files on this machine" in text


async def test_two_waiting_people_are_answered_oldest_first_by_name() -> None:
    """A joiner asking while the owner's request waits gets a question of their own that
    names the role; `y` then `n` answer the owner, then the joiner, each said by name."""
    read_fd, write_fd = os.pipe()
    output = io.StringIO()
    service = ConsentService(ConsentBook(attended=True, timeout=60))
    prompt = TerminalPrompt(service, read_fd, output)
    prompt.start()
    try:
        owner = asyncio.create_task(service.ask(replace(ENV, role="owner")))
        await asyncio.sleep(0)  # one loop turn: the owner's request is printed first
        joiner = asyncio.create_task(service.ask(replace(ENV, staff="carol", role="participant")))
        await asyncio.sleep(0)
        shown = output.getvalue()
        assert "carol (support level 2) asks to join a running session" in shown
        assert f"secondline-agent approve {ENV.session} carol" in shown
        os.write(write_fd, b"y\nn\n")
        async with asyncio.timeout(WAIT):
            approved, denied = await owner, await joiner
        assert (approved.decision, denied.decision) == ("approved", "denied")
        assert "alice (owner) approved" in output.getvalue()
        assert "carol (participant) denied" in output.getvalue()
    finally:
        prompt.close()
        service.close()
        os.close(read_fd)
        os.close(write_fd)
