"""Answers of an SSH client's terminal among its typed bytes (pure)."""

from __future__ import annotations

from broker.sessions.answer_back import MAX_OPEN, WINDOW, AnswerBack


def test_each_open_query_takes_one_answer_from_the_head_of_the_input() -> None:
    """CPR, DA1, DA2, DECRQSS and colour queries open; answers at the head close them."""
    answers = AnswerBack()
    answers.asked(b"\x1b[6n\x1b[c\x1b[>c\x1bP$qm\x1b\\\x1b]11;?\x07")
    assert answers.open == 5
    head = b"\x1b[5;10R\x1b[?1;2c\x1b[>0;276;0c\x1bP1$r0m\x1b\\\x1b]11;rgb:0b0b/1212/2020\x07"
    assert answers.split(head + b"ls\r") == (head, b"ls\r")
    assert answers.open == 0
    assert answers.split(b"\x1b[1;5R") == (b"", b"\x1b[1;5R")  # nothing asked: typed


def test_a_query_split_across_chunks_counts_once() -> None:
    """A query cut at any byte is counted once; repeated small chunks do not recount it."""
    query = b"\x1b[6n"
    for cut in range(1, len(query)):
        answers = AnswerBack()
        answers.asked(b"prompt " + query[:cut])
        answers.asked(query[cut:])
        answers.asked(b"x")
        assert answers.open == 1


def test_only_a_query_ending_the_output_counts_and_open_ones_are_bounded() -> None:
    """A query followed by more output than the window is not counted; at most MAX_OPEN."""
    answers = AnswerBack()
    answers.asked(b"\x1b[6n" + b"y" * WINDOW)
    assert answers.open == 0
    answers.asked(b"\x1b[6n" * (MAX_OPEN + 5))
    assert answers.open == MAX_OPEN


def test_typed_bytes_before_an_answer_keep_it_typed() -> None:
    """Only the head of the input can be an answer: keys first, then all of it is typed."""
    answers = AnswerBack()
    answers.asked(b"\x1b[6n")
    assert answers.split(b"a\x1b[5;1R") == (b"", b"a\x1b[5;1R")
    assert answers.open == 1
