"""The one secret scrubber (pure): what it replaces, what it leaves, and its invariants."""

from __future__ import annotations

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from broker.secret_scrubber import (
    REDACTED,
    LineScrubber,
    _apply_rules,
    find_secrets,
    scrub_secrets,
)

R = REDACTED
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
GITHUB = "ghp_" + "A1b2C3d4E5" * 4  # 40 characters after the prefix
SLACK = "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"


@pytest.mark.parametrize(
    ("line", "expected", "kind"),
    [
        ("mysql -u root -pHunter2 shop", f"mysql -u root -p{R} shop", "password option"),
        ("mysqldump -uroot -p'Hunter 2' --all", f"mysqldump -uroot -p{R} --all", "password option"),
        ("mariadb -p\"Hunter2\" -e 'select 1'", f"mariadb -p{R} -e 'select 1'", "password option"),
        (
            "mysql -u root --password=Hunter2 db",
            f"mysql -u root --password={R} db",
            "password option",
        ),
        (
            "wget --user=bob --password Hunter2 x",
            f"wget --user=bob --password {R} x",
            "password option",
        ),
        ("tool --db-password=Hunter2", f"tool --db-password={R}", "password option"),
        ("gh auth --with-token abc123def", f"gh auth --with-token {R}", "password option"),
        ("cli --api-key k3y", f"cli --api-key {R}", "password option"),
        ("sshpass -p Hunter2 ssh root@h", f"sshpass -p {R} ssh root@h", "password option"),
        ("sshpass -pHunter2 ssh h", f"sshpass -p{R} ssh h", "password option"),
        ("redis-cli -h db -a Hunter2 ping", f"redis-cli -h db -a {R} ping", "password option"),
        (
            "docker login -u bob -p Hunter2 reg",
            f"docker login -u bob -p {R} reg",
            "password option",
        ),
        ("curl -u admin:Hunter2 https://h/x", f"curl -u admin:{R} https://h/x", "password option"),
        (
            "curl --user 'admin:Hunter2' https://h",
            f"curl --user 'admin:{R}' https://h",
            "password option",
        ),
        (
            "smbclient //s/share -U bob%Hunter2",
            f"smbclient //s/share -U bob%{R}",
            "password option",
        ),
        (
            "aws configure set aws_secret_access_key wJalrXUtnFEMI/K7MDENG",
            f"aws configure set aws_secret_access_key {R}",
            "password option",
        ),
        ("PGPASSWORD=Hunter2 psql -h db", f"PGPASSWORD={R} psql -h db", "assignment"),
        ("MYSQL_PWD='Hunter2' mysql", f"MYSQL_PWD={R} mysql", "assignment"),
        ("export DB_PASS=Hunter2", f"export DB_PASS={R}", "assignment"),
        ("password = Hunter2", f"password = {R}", "assignment"),
        ("echo 'password: Hunter2' >> x.yml", f"echo 'password: {R}' >> x.yml", "assignment"),
        ('{"api_key": "abc123"}', f'{{"api_key": {R}}}', "assignment"),
        (
            "-o username=bob,password=Hunter2 //s/x",
            f"-o username=bob,password={R} //s/x",
            "assignment",
        ),
        (
            "export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            f"export AWS_SECRET_ACCESS_KEY={R}",
            "assignment",
        ),
        (
            "git clone https://deploy:Hunter2@git.example.com/r",
            f"git clone https://deploy:{R}@git.example.com/r",
            "password in URL",
        ),
        (
            "psql postgresql://app:Hunter2@db:5432/x",
            f"psql postgresql://app:{R}@db:5432/x",
            "password in URL",
        ),
        (
            f"curl -H 'Authorization: Bearer {JWT}' h",
            f"curl -H 'Authorization: Bearer {R}' h",
            "authorization header",
        ),
        (
            "Authorization: Basic YWRtaW46SHVudGVyMg==",
            f"Authorization: Basic {R}",
            "authorization header",
        ),
        ("proxy-authorization: abcdef", f"proxy-authorization: {R}", "authorization header"),
        (
            "http --auth-type=bearer Bearer abcdefgh12345",
            f"http --auth-type=bearer Bearer {R}",
            "bearer token",
        ),
        ("key AKIAIOSFODNN7EXAMPLE here", f"key {R} here", "AWS access key id"),
        (
            f"git push https://{GITHUB}@github.com/x/y",
            f"git push https://{R}@github.com/x/y",
            "GitHub token",
        ),
        ("echo github_pat_11ABCDEFG0123456789abcdefghij", f"echo {R}", "GitHub token"),
        ("echo glpat-abcdefghij0123456789", f"echo {R}", "GitLab token"),
        (f"echo {SLACK}", f"echo {R}", "Slack token"),
        (
            "curl https://hooks.slack.com/services/T0001/B0002/abcdEFGH",
            f"curl https://hooks.slack.com/services/{R}",
            "Slack webhook",
        ),
        ("echo sk_live_abcdefghijklmnop1234", f"echo {R}", "Stripe key"),
        ("echo npm_" + "a" * 36, f"echo {R}", "npm token"),
        (
            "twine -u __token__ pypi-AgEIcHlwaS5vcmc" + "x" * 60,
            f"twine -u __token__ {R}",
            "PyPI token",
        ),
        ("echo sk-proj-" + "a1" * 20, f"echo {R}", "OpenAI key"),
        ("echo AIza" + "b" * 35, f"echo {R}", "Google API key"),
        (f"echo {JWT}", f"echo {R}", "JSON web token"),
        (
            "echo '-----BEGIN RSA PRIVATE KEY-----MIIEow-----END RSA PRIVATE KEY-----'",
            f"echo '-----BEGIN RSA PRIVATE KEY-----{R}-----END RSA PRIVATE KEY-----'",
            "private key",
        ),
    ],
)
def test_secrets_are_replaced_visibly(line: str, expected: str, kind: str) -> None:
    """Each shape of secret is replaced by the REDACTED marker; the rest of the line stays."""
    assert scrub_secrets(line) == expected
    assert kind in [f.kind for f in find_secrets(line)]


@pytest.mark.parametrize(
    "line",
    [
        "ls -la /var/log",
        "systemctl restart cups",
        "lpstat -p -d",
        "grep -r password /etc/pam.d",
        "mysql -u root -p",
        "mysql -u root -p shop",
        "ssh -p 2222 host",
        "tar -xpf x.tar && cp -pr a b",
        "docker run -u 1000:1000 img",
        "journalctl -u nginx --since '1 hour ago'",
        "curl -u alice https://example.com",
        "curl https://example.com/health",
        "psql postgresql://postgres@127.0.0.1:5432/test",
        "passwd alice",
        "passwd: password updated successfully",
        "sudo: 3 incorrect password attempts",
        "[sudo] password for alice: ",
        "New password: ",
        "PWD=/root",
        "OLDPWD=/tmp",
        "psql --no-password -h db",
        "docker login --password-stdin",
        "export PGPASSFILE=~/.pgpass",
        "PGPASSWORD=$PW psql",
        "export TOKEN=${GH_TOKEN}",
        "echo $DB_PASSWORD",
        "max_tokens=100 bypass=1",
        "git checkout 3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f",
        "sha256sum /tmp/file.iso",
        "openssl x509 -in cert.pem -noout -text",
        "kubectl get pods -n kube-system",
        "pip install requests==2.31.0",
        "find / -name '*.pem'",
        "X= cmd",
    ],
)
def test_ordinary_commands_stay(line: str) -> None:
    """No false alarms on everyday commands and on the messages around password prompts."""
    assert scrub_secrets(line) == line
    assert find_secrets(line) == []


KEY_BODY = ["b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtz", "c2gtZWQyNTUx", ""]


def test_a_private_key_block_shows_as_one_redaction() -> None:
    """BEGIN line, one REDACTED marker, END line; what follows is kept."""
    text = "\n".join(
        [
            "$ cat id_ed25519",
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            *KEY_BODY,
            "-----END OPENSSH PRIVATE KEY-----",
            "$ ls",
        ]
    )
    assert scrub_secrets(text + "\n") == (
        "$ cat id_ed25519\n-----BEGIN OPENSSH PRIVATE KEY-----\n"
        f"{R}\n-----END OPENSSH PRIVATE KEY-----\n$ ls\n"
    )
    assert [(f.kind, f.line) for f in find_secrets(text)] == [("private key", 3)]


def test_a_key_pasted_into_a_heredoc_is_covered_too() -> None:
    """The "> " continuation prompt before each pasted line does not let the body through."""
    lines = [
        "$ cat > key <<EOF",
        "> -----BEGIN RSA PRIVATE KEY-----",
        "> Proc-Type: 4,ENCRYPTED",
        "> MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun",
        "> -----END RSA PRIVATE KEY-----",
        "> EOF",
    ]
    out = list(LineScrubber().lines(lines))
    assert out == [lines[0], lines[1], R, "-----END RSA PRIVATE KEY-----", "> EOF"]


def test_a_begin_line_without_a_body_hides_nothing_after_it() -> None:
    """A grep for the marker is no key: the next line that is no key body ends the block."""
    lines = [
        "/etc/ssl/a.pem:-----BEGIN RSA PRIVATE KEY-----",
        "/etc/ssl/b.pem:-----BEGIN RSA PRIVATE KEY-----",
        "$ echo done",
    ]
    assert list(LineScrubber().lines(lines)) == lines


def test_a_block_that_never_ends_stops_hiding_after_200_lines() -> None:
    scrubber = LineScrubber()
    out = list(scrubber.lines(["-----BEGIN EC PRIVATE KEY-----", *["QUJD"] * 300]))
    assert out == ["-----BEGIN EC PRIVATE KEY-----", R, *["QUJD"] * 100]


def test_line_scrubber_across_blocks_counts_lines() -> None:
    """Blocks fed one after another keep the line numbers and the open key block."""
    scrubber = LineScrubber()
    assert scrubber.lines(["ls", "y"]) == ["ls", "y"]
    assert list(scrubber.lines(["-----BEGIN PRIVATE KEY-----"])) == ["-----BEGIN PRIVATE KEY-----"]
    assert list(scrubber.lines(["QUJD", "QUJD"])) == [R]
    assert list(scrubber.lines(["-----END PRIVATE KEY-----", "PGPASSWORD=x1 psql"])) == [
        "-----END PRIVATE KEY-----",
        f"PGPASSWORD={R} psql",
    ]
    assert [(f.kind, f.line) for f in scrubber.findings] == [
        ("private key", 4),
        ("assignment", 7),
    ]


def test_line_ends_are_kept() -> None:
    assert scrub_secrets("a\r\nPGPASSWORD=x psql\r\n\nb") == f"a\r\nPGPASSWORD={R} psql\r\n\nb"
    assert scrub_secrets("") == ""


# -- properties ------------------------------------------------------------------------------

SECRET = st.text(
    alphabet=st.sampled_from("abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789!#%^*+"),
    min_size=6,
    max_size=30,
).filter(lambda s: s[0].isalnum())

TEMPLATES = [
    "mysql -u root -p{s} shop",
    "mysql -u root --password={s} shop",
    "PGPASSWORD={s} psql -h db -U app",
    "curl -u admin:{s} https://api.example.com/x",
    "git clone https://deploy:{s}@git.example.com/r.git",
    "curl -H 'Authorization: Bearer {s}' https://x",
    "sshpass -p {s} ssh root@host",
    "redis-cli -a {s} ping",
    "export API_TOKEN={s}",
    'curl -d \'{{"password": "{s}"}}\' https://x',
]


@given(secret=SECRET, template=st.sampled_from(TEMPLATES))
@example(secret="Hunter2", template=TEMPLATES[0])
def test_no_templated_secret_survives(secret: str, template: str) -> None:
    """Whatever the password, none of it is left in the scrubbed line, and it is found."""
    # "passwo" is no secret in --password=, nor "redact" in the marker.
    assume(secret not in template.format(s="") + R)
    line = template.format(s=secret)
    scrubbed = scrub_secrets(line)
    assert secret not in scrubbed
    assert R in scrubbed
    assert find_secrets(line)


WORDS = st.sampled_from(
    [
        "ls", "-la", "/var/log", "grep", "-r", "error", "systemctl", "restart", "cups", "-p",
        "-u", "root", "tail", "-f", "lpstat", "-d", "ps", "aux", "|", "&&", "cd", "/srv/app",
        "git", "pull", "docker", "ps", "journalctl", "nginx", "df", "-h", "42%", "echo",
        "$HOME", "ssh", "2222", "user@host", "make", "install", "free", "-m", "uptime",
    ]
)  # fmt: skip


@given(st.lists(WORDS, min_size=1, max_size=12).map(" ".join))
def test_ordinary_command_lines_are_left_alone(line: str) -> None:
    """Lines made of everyday command words never change."""
    assert scrub_secrets(line) == line


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_scrubbing_is_idempotent_and_never_raises(text: str) -> None:
    once = scrub_secrets(text)
    assert scrub_secrets(once) == once
    assert find_secrets(once) == []


PIECES = st.sampled_from(
    [
        *"aAkKpPsS=:-_ @/'\"%.0123456789",
        *("password", "TOKEN", "mysql", "curl", "://", "Bearer ", "AKIA", "eyJ", "secret"),
        *("-p", "-a", "redis-cli", "sshpass", "ghp_", "xoxb-", "BEGIN"),
    ]
)


@settings(max_examples=300)
@given(st.lists(PIECES, max_size=30).map("".join))
def test_the_quick_check_skips_no_line_a_rule_would_change(line: str) -> None:
    """The one-search shortcut for plain lines gives the same result as every rule."""
    found: list[str] = []
    assert scrub_secrets(line) == _apply_rules(line, found)


@given(st.lists(st.text(alphabet="abc xyz=:-", max_size=20), max_size=10))
def test_line_count_is_kept_without_key_blocks(lines: list[str]) -> None:
    text = "\n".join(lines)
    assert scrub_secrets(text).count("\n") == text.count("\n")


def test_the_marker_matches_no_rule() -> None:
    """The marker itself is never taken for a secret (so scrubbing twice changes nothing)."""
    assert R == "\u2039redacted\u203a"
    assert find_secrets(f"PGPASSWORD={R}") == []
