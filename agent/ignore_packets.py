"""SSH connections without asyncssh's empty ``SSH_MSG_IGNORE`` ahead of every packet.

Once encryption is on, asyncssh (2.24.1, ``SSHConnection.send_packet``) sends an empty
``SSH_MSG_IGNORE`` before every packet it sends after the key exchange: the old
counter-measure for CBC ciphers, whose next IV is the last ciphertext block an observer
already saw. None of our connections can negotiate a CBC cipher (the gateway offers
AES-GCM, and AES-CTR to legacy clients; the tunnel AES-GCM and ChaCha20-Poly1305), and
with those the packet protects nothing. It costs every keystroke twice over: its
encryption and packet framing on the way out, its decryption and dispatch on the way in
(the agent's asyncssh sends them to the broker too), and its bytes on every socket.
py-spy of the broker during an idle echo, before the gateway gathered a loop turn's
packets into one ``send()`` (broker.write_coalescing), put a tenth of the broker's samples
in sending those ignore packets alone.

:func:`drop_ignore_packets` makes one connection send every packet but those, and only
while its negotiated cipher is one without IV chaining (:data:`NO_IV_CHAINING`): a CBC
cipher, were one ever negotiated, keeps the ignore packets. asyncssh offers no option
for it; this replaces the connection's ``send_packet`` on the instance (asyncssh's own
class stays as it is), whose recursive call for the ignore packet goes through the
instance. tests/unit/test_library_guards.py fails when asyncssh changes that method.
"""

from __future__ import annotations

import types
from typing import Final

import asyncssh
from asyncssh.constants import MSG_IGNORE

#: Cipher names (asyncssh's ``send_cipher`` extra info) whose packets do not chain IVs:
#: AEAD ciphers and counter mode. An ignore packet in front of theirs hides nothing.
NO_IV_CHAINING: Final = ("-gcm@openssh.com", "chacha20-poly1305@openssh.com", "-ctr")


def _send_packet(
    self: asyncssh.SSHClientConnection | asyncssh.SSHServerConnection,
    pkttype: int,
    *args: bytes,
    handler: object = None,
) -> None:
    if pkttype == MSG_IGNORE and ignore_buys_nothing(self.get_extra_info("send_cipher")):
        return
    type(self).send_packet(self, pkttype, *args, handler=handler)  # type: ignore[arg-type]


def ignore_buys_nothing(cipher: object) -> bool:
    """Whether a connection encrypting with ``cipher`` (its ``send_cipher``) needs no
    ignore packets; unknown (None) or a CBC cipher: it does."""
    return isinstance(cipher, str) and cipher.endswith(NO_IV_CHAINING)


def drop_ignore_packets(conn: asyncssh.SSHClientConnection | asyncssh.SSHServerConnection) -> None:
    """From now on ``conn`` sends no ignore packets while its cipher needs none."""
    conn.send_packet = types.MethodType(_send_packet, conn)  # type: ignore[method-assign]
